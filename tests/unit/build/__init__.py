"""Unit tests of factory/build (no engine)."""
