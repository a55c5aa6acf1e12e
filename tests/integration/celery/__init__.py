"""Integration tests of the several-hosts shape: Redis broker, Celery workers on extra engines."""
