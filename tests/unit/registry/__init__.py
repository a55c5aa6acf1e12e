"""Unit tests of factory/registry (no registry server)."""
