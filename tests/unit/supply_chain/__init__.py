"""Unit tests of factory/supply_chain."""
