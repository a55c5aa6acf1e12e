"""Integration tests on an S3 endpoint (moto's server)."""
