"""A real PostgreSQL server for tests, and a Dagster instance config on it as in production.

`postgres_server()` runs Debian's `postgresql` (installed with apt-get when missing): `initdb` into
a temporary folder and `postgres` on a free loopback port, both as the `postgres` user, with
password authentication; it stops the server by its PID at the end
(factory/services/server_process.py). `write_production_instance()` writes a `dagster.yaml` with
deploy/dagster.yaml's storage, queue, concurrency, monitoring and retry sections as they are,
except `sslmode: require` (the test server has no certificate).
"""

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import yaml

from factory.services import server_process
from factory.settings import PROJECT_ROOT

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
LISTEN = "listen_addresses=127.0.0.1"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str = USER
    password: str = PASSWORD
    database: str = DATABASE

    def dagster_env(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables deploy/dagster.yaml reads."""
        return {
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_DB": self.database,
            "DAGSTER_PG_PORT": str(self.port),
        }

    def connect(self, dbname: str | None = None):
        return psycopg2.connect(
            dbname=dbname or self.database,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
        )

    def create_database(self, name: str) -> str:
        """A new empty database on the server; its SQLAlchemy URL."""
        conn = self.connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{name}"


def write_production_instance(home: Path, sections: tuple[str, ...] = PRODUCTION_SECTIONS) -> Path:
    """`home/dagster.yaml` from deploy/dagster.yaml's sections (credentials from DAGSTER_PG_*)."""
    production = yaml.safe_load((PROJECT_ROOT / "deploy" / "dagster.yaml").read_text())
    config = {section: production[section] for section in sections}
    # The one change to the storage section: the test server has no TLS certificate.
    params = config["storage"]["postgres"]["postgres_db"].pop("params")
    assert params == {"sslmode": "require"}, params
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


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


def _as_postgres() -> dict:
    """Popen arguments that run a command as `postgres` when we are root (initdb refuses root)."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on 127.0.0.1:<free port> with an empty `dagster` database."""
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
    port = server_process.free_port()
    server = server_process.spawn(
        [bin_dir / "postgres", "-D", data, "-p", str(port), "-k", root, "-c", LISTEN],
        root / "postgres.log",
        **_as_postgres(),
    )
    settings = {"host": "127.0.0.1", "port": port, "user": USER, "password": PASSWORD}
    try:
        conn = server_process.wait_until(
            "PostgreSQL",
            lambda: psycopg2.connect(dbname="postgres", **settings),
            [server],
            lambda: [root / "postgres.log"],
            timeout_s=READY_TIMEOUT_S,
            poll_s=0.2,
            retry_on=(psycopg2.OperationalError,),
        )
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        conn.cursor().execute(f"CREATE DATABASE {DATABASE}")
        conn.close()
        yield PostgresServer(host="127.0.0.1", port=port)
    finally:
        # SIGINT: PostgreSQL's fast shutdown, of the server this fixture started.
        server_process.stop(server, sig=signal.SIGINT)
        shutil.rmtree(root, ignore_errors=True)
