"""Unit tests of factory/report."""
