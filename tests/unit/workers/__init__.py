"""Unit tests of factory/workers."""
