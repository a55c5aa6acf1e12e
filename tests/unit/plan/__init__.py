"""Unit tests of factory/plan."""
