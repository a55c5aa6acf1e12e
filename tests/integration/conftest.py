"""Integration fixtures shared by the service folders: the local services, PostgreSQL, moto's S3.

`services`: the real local services, started once per session and left running. They stay up
after the session on purpose: CI and the next test run reuse them, and `factory services down`
stops them. `up` starts only what does not answer, so this fixture is cheap when they already run.

`postgres` (one per session) and `s3` (one per test module) are servers of the tests' own, stopped
by their PID when no longer needed (tests/integration/postgres_server.py, s3_server.py).
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


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server for the tests of one module (each test makes its own bucket)."""
    from tests.integration.s3_server import moto_server

    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server
