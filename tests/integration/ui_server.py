"""The Dagster UI on a throw-away instance, and Debian's Chromium to look at it.

Shared by the browser, submit and results-consumer tests (tests/integration/dagster/) and the docs
screenshots (docs/screenshots.py). `ui_server` gives a `dagster-webserver` (and optionally a
`dagster-daemon`, which executes runs launched from the UI: the instance queues them) on a free
loopback port, with its own DAGSTER_HOME, data dir and manifest store, and stops exactly the
processes it started. Starting, waiting for and stopping the two processes, and the GraphQL calls
made to them, are bench/dagster_ui.py's (the load benchmark starts them the same way); what is
the tests' own here is preparing the instance and the environment, and Chromium.

Chromium is Debian's package, driven by Playwright with `executable_path` (no browser download);
`ensure_chromium` installs it with apt-get when it is missing. Nothing needs a display.
"""

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import dagster as dg

from bench.dagster_ui import BIN, LOCATION, REPOSITORY, STOP_SENSOR, DagsterUi
from factory.services import embedded as services
from factory.settings import Settings
from factory_assets.instance import prepare_dagster_home

# Names the tests and docs/screenshots.py import from here.
__all__ = ["BIN", "LOCATION", "REPOSITORY", "STOP_SENSOR", "UiServer", "ui_server"]

CHROMIUM = Path("/usr/bin/chromium")
# Headless, as root, on a machine whose network is closed: without the background-networking
# flags Chromium keeps opening connections that are refused.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

APT_TIMEOUT_S = 1200


def ensure_chromium() -> Path:
    """/usr/bin/chromium, installed from Debian's `chromium` package first if it is missing."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        msg = f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)"
        raise RuntimeError(msg)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait_lock = "-oDPkg::Lock::Timeout=600"
    for argv in (
        ["apt-get", "-q", wait_lock, "update"],
        ["apt-get", "-q", "-y", wait_lock, "install", "--no-install-recommends", "chromium"],
    ):
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            msg = f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-2000:]}"
            msg += done.stderr[-2000:]
            raise RuntimeError(msg)
    if not CHROMIUM.exists():
        msg = f"apt-get installed chromium but {CHROMIUM} is still missing"
        raise RuntimeError(msg)
    return CHROMIUM


def launch_chromium(playwright):
    """Headless Debian Chromium through Playwright (a fresh profile per launch)."""
    return playwright.chromium.launch(
        executable_path=str(ensure_chromium()), headless=True, args=CHROMIUM_ARGS
    )


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables in this process for the block, then put them back."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class UiServer(DagsterUi):
    """The webserver (and daemon) of `ui_server`, with the instance and data dir they serve."""

    def __init__(self, logs: Path, env: dict[str, str], *, dagster_home: Path, data_dir: Path):
        super().__init__(logs, env)
        self.dagster_home = dagster_home
        self.data_dir = data_dir

    def instance(self) -> dg.DagsterInstance:
        """The server's instance, opened from its DAGSTER_HOME (close it after use)."""
        return dg.DagsterInstance.from_config(str(self.dagster_home))


def prepare_home(home: Path, settings: Settings, partitions: Mapping[str, Sequence[str]]) -> None:
    """The repo's dagster.yaml and pool limits in `home`, and the given dynamic partitions."""
    with _environ(DAGSTER_HOME=str(home)):
        prepare_dagster_home(settings)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for name, keys in partitions.items():
            instance.add_dynamic_partitions(name, list(keys))


@contextlib.contextmanager
def ui_server(
    workdir: Path,
    *,
    manifest_store: Path,
    data_dir: Path,
    partitions: Mapping[str, Sequence[str]] | None = None,
    dagster_home: Path | None = None,
    daemon: bool = True,
    sensors: bool = False,
    keep_sensors: Sequence[str] = (),
) -> Iterator[UiServer]:
    """A webserver (and daemon) for the code location, on a free port, stopped afterwards.

    `dagster_home` defaults to a new folder under `workdir`; it is prepared as the project's
    start-up does (`prepare_dagster_home`), and `partitions` (partitions definition name -> keys)
    are added to it. The processes get FACTORY_MANIFEST_STORE, FACTORY_DATA_DIR and DAGSTER_HOME
    from the arguments and DOCKER_HOST of the engine the project uses. With `daemon` and without
    `sensors`, the sensors are stopped before the daemon starts, so runs come only from the UI
    (and from the sensors named in `keep_sensors`, e.g. the results automation sensor).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    home = dagster_home or workdir / "dagster_home"
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    current = Settings.from_env()
    settings = Settings(manifest_store=manifest_store, data_dir=data_dir, registry=current.registry)
    prepare_home(home, settings, partitions or {})
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FACTORY_DATA_DIR": str(data_dir),
        "FACTORY_MANIFEST_STORE": str(manifest_store),
        "FACTORY_REGISTRY": settings.registry,
        "DOCKER_HOST": services.docker_host(current),
    }
    server = UiServer(logs, env, dagster_home=home, data_dir=data_dir)
    try:
        server.spawn_webserver()
        server.wait_for_webserver()
        # The "Join the Dagster community" dialog would cover the page on the first visit.
        server.graphql("mutation { setNuxSeen }")
        if daemon:
            if not sensors:
                server.stop_sensors(keep_sensors)
            server.spawn_daemon()
            server.wait_for_daemon()
        yield server
    finally:
        server.stop()
