"""Integration tests whose subject is the Docker Engine: services, builds, extra engines, GPU
requests."""
