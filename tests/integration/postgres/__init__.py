"""Integration tests on a real PostgreSQL server (session fixture `postgres`)."""
