"""Unit tests of factory/records."""
