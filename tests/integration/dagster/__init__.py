"""Integration tests that need a Dagster instance, daemon or webserver besides the local
services."""
