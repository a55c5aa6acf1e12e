"""Unit tests of factory/store: models, validation, rendering, keys, hostile stores and
templates."""
