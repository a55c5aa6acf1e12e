"""Integration fixtures: the real local services, started once per session and left running.

The services stay up after the session on purpose: CI and the next test run reuse them, and
`factory services down` stops them. `up` starts only what does not answer, so this fixture is cheap
when they already run.
"""

import pytest

from factory.services import embedded as local_services
from factory.settings import Settings


@pytest.fixture(scope="session")
def services() -> Settings:
    """Settings whose engine, registry, qemu emulation and base images are ready."""
    settings = Settings.from_env()
    local_services.up(settings)
    return settings


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server for the tests that need one (each makes its own database)."""
    from tests.integration.postgres_server import postgres_server

    with postgres_server() as server:
        yield server
