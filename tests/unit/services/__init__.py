"""Unit tests of factory/services."""
