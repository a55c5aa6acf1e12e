"""Factory: manifest store to build/test/compatibility matrix of container images.

The modules in this package hold the pure logic and the I/O clients; none imports Dagster, so the
CLI and the tests use them without loading the code location.
"""
