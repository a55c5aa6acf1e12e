"""Unit tests of factory/cli."""
