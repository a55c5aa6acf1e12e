"""Dagster on PostgreSQL, configured as in production (deploy/dagster.yaml).

The fixture runs a real PostgreSQL server (Debian's `postgresql`, installed with apt-get when
missing): `initdb` into a temp folder and `postgres` on a free loopback port, both as the
`postgres` user, with password authentication; it stops the server by its PID at the end.

The instance takes deploy/dagster.yaml's storage, queue, concurrency, monitoring and retry
sections as they are, credentials from DAGSTER_PG_* variables, except `sslmode: require` (the test
server has no certificate). The run launcher (it needs a cluster) and the compute log manager (it
needs a bucket) are left at their local defaults.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml

from factory.pools import POOL_LIMITS
from factory.settings import PROJECT_ROOT
from factory_assets.pools import apply_pool_limits, current_pool_limits

pytestmark = pytest.mark.integration

PRODUCTION_SECTIONS = (
    "storage",
    "run_coordinator",
    "concurrency",
    "scheduler",
    "run_monitoring",
    "run_retries",
    "telemetry",
)
USER, PASSWORD, DATABASE = "factory", "factory-test-password", "dagster"
READY_TIMEOUT_S = 30


def _postgres_bin() -> Path:
    """Debian's server binaries, installing the `postgresql` package first when they are missing."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env)
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    assert found, "apt-get installed postgresql but /usr/lib/postgresql/*/bin/postgres is missing"
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres() -> dict:
    """Popen arguments that run a command as `postgres` when we are root (initdb refuses root)."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


@pytest.fixture(scope="module")
def postgres_server():
    """A PostgreSQL server on 127.0.0.1:<free port>, yielding its connection settings."""
    bin_dir = _postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="factory-pg-"))
    data = root / "data"
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    subprocess.run(
        [
            bin_dir / "initdb",
            "-D",
            data,
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-instructions",
        ],
        check=True,
        capture_output=True,
        **_as_postgres(),
    )
    port = _free_port()
    log = (root / "postgres.log").open("w")
    server = subprocess.Popen(
        [
            bin_dir / "postgres",
            "-D",
            data,
            "-p",
            str(port),
            "-k",
            root,
            "-c",
            "listen_addresses=127.0.0.1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        **_as_postgres(),
    )
    settings = {"host": "127.0.0.1", "port": port, "user": USER, "password": PASSWORD}
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                conn = psycopg2.connect(dbname="postgres", **settings)
            except psycopg2.OperationalError:
                assert server.poll() is None, (root / "postgres.log").read_text()
                assert time.monotonic() < deadline, "PostgreSQL did not answer in time"
                time.sleep(0.2)
                continue
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            conn.cursor().execute(f"CREATE DATABASE {DATABASE}")
            conn.close()
            break
        yield settings
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown of the server this fixture started
        server.wait(timeout=30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_instance(postgres_server, tmp_path, monkeypatch):
    """A Dagster instance with the production config, pointed at the test server."""
    for name, value in {
        "DAGSTER_PG_USERNAME": USER,
        "DAGSTER_PG_PASSWORD": PASSWORD,
        "DAGSTER_PG_HOST": postgres_server["host"],
        "DAGSTER_PG_DB": DATABASE,
        "DAGSTER_PG_PORT": str(postgres_server["port"]),
    }.items():
        monkeypatch.setenv(name, value)
    production = yaml.safe_load((PROJECT_ROOT / "deploy" / "dagster.yaml").read_text())
    config = {section: production[section] for section in PRODUCTION_SECTIONS}
    # The one change to the storage section: the test server has no TLS certificate.
    assert config["storage"]["postgres"]["postgres_db"].pop("params") == {"sslmode": "require"}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        yield instance, tmp_path


manifests = dg.DynamicPartitionsDefinition(name="manifests_pg_test")


@dg.asset(partitions_def=manifests, pool="amd64")
def pg_probe(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """A pooled, partitioned asset, like a Factory chain's, that only reports its partition."""
    return dg.MaterializeResult(metadata={"manifest_id": context.partition_key})


def test_partition_materialized_on_postgres_and_read_back(pg_instance):
    instance, home = pg_instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert apply_pool_limits(instance) == dict(POOL_LIMITS)

    instance.add_dynamic_partitions(manifests.name, ["llm_factory", "other"])
    result = dg.materialize([pg_probe], partition_key="llm_factory", instance=instance)
    assert result.success

    # A second instance from the same config sees it all: it is in PostgreSQL, not in memory.
    with dg.DagsterInstance.from_config(str(home)) as reader:
        assert current_pool_limits(reader) == dict(POOL_LIMITS)
        assert sorted(reader.get_dynamic_partitions(manifests.name)) == ["llm_factory", "other"]
        run = reader.get_run_by_id(result.run_id)
        assert run is not None
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == "llm_factory"
        event = reader.get_latest_materialization_event(dg.AssetKey("pg_probe"))
        assert event is not None
        assert event.run_id == result.run_id
        materialization = event.asset_materialization
        assert materialization is not None
        assert materialization.partition == "llm_factory"
        assert materialization.metadata["manifest_id"].value == "llm_factory"
        # The step held an amd64 slot from the PostgreSQL concurrency tables, and gave it back.
        info = reader.event_log_storage.get_concurrency_info("amd64")
        assert info.slot_count == POOL_LIMITS["amd64"]
        assert info.claimed_slots == []
        steps = reader.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
        assert len(steps) == 1
