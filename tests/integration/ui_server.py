"""The Dagster UI on a throw-away instance, and Debian's Chromium to look at it.

Shared by the browser test (tests/integration/dagster/test_ui_browser.py) and the docs screenshots
(docs/screenshots.py). `ui_server` gives a `dagster-webserver` (and optionally a `dagster-daemon`,
which executes runs launched from the UI: the instance queues them) on a free loopback port, with
its own DAGSTER_HOME, data dir and manifest store, and stops exactly the processes it started.

Chromium is Debian's package, driven by Playwright with `executable_path` (no browser download);
`ensure_chromium` installs it with apt-get when it is missing. Nothing needs a display.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import requests

from factory.services import embedded as services
from factory.settings import PROJECT_ROOT, Settings
from factory_assets.instance import prepare_dagster_home

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
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.5
LOCATION = "factory"
REPOSITORY = "__repository__"
BIN = Path(sys.executable).parent


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


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@dataclass
class UiServer:
    url: str
    dagster_home: Path
    data_dir: Path
    env: dict[str, str]
    logs: Path

    def graphql(self, query: str, variables: Mapping | None = None) -> dict:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            msg = f"GraphQL errors: {body['errors']}"
            raise RuntimeError(msg)
        return body["data"]

    def instance(self) -> dg.DagsterInstance:
        """The server's instance, opened from its DAGSTER_HOME (close it after use)."""
        return dg.DagsterInstance.from_config(str(self.dagster_home))

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for log in sorted(self.logs.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)


def prepare_home(home: Path, settings: Settings, partitions: Mapping[str, Sequence[str]]) -> None:
    """The repo's dagster.yaml and pool limits in `home`, and the given dynamic partitions."""
    with _environ(DAGSTER_HOME=str(home)):
        prepare_dagster_home(settings)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for name, keys in partitions.items():
            instance.add_dynamic_partitions(name, list(keys))


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        # A session of its own: the code servers and run workers it starts are in its group.
        return subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM to the process we started, then to what is left of its own process group."""
    pgid = proc.pid  # start_new_session: the group id is the leader's PID
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(pgid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT_S / 3
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(POLL_S)


def _wait(what: str, check, procs: Sequence[subprocess.Popen], server: UiServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                msg = f"{proc.args[0]} exited ({proc.returncode}) before {what}:\n"
                raise RuntimeError(msg + server.log_tail())
        try:
            if check():
                return
        except (requests.RequestException, RuntimeError) as exc:
            last = exc
        time.sleep(POLL_S)
    msg = f"timed out after {START_TIMEOUT_S:.0f}s waiting for {what} (last: {last}):\n"
    raise TimeoutError(msg + server.log_tail())


LOCATION_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""


def _location_loaded(server: UiServer) -> bool:
    data = server.graphql(LOCATION_QUERY)["workspaceOrError"]
    entries = {e["name"]: e for e in data.get("locationEntries", [])}
    entry = entries.get(LOCATION)
    if not entry or entry["loadStatus"] != "LOADED":
        return False
    location = entry["locationOrLoadError"] or {}
    if location.get("__typename") == "PythonError":
        msg = f"code location {LOCATION} failed to load: {location['message']}"
        raise AssertionError(msg)  # not retried by _wait
    return location.get("__typename") == "RepositoryLocation"


SENSORS_QUERY = """
query($selector: RepositorySelector!) { sensorsOrError(repositorySelector: $selector) {
    __typename ... on Sensors { results { name sensorState { id status } } }
} }
"""
STOP_SENSOR = """
mutation($id: String!) { stopSensor(id: $id) {
    __typename ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
} }
"""


def stop_sensors(server: UiServer, keep: Sequence[str] = ()) -> list[str]:
    """Stop the code location's sensors (they default to running) so only the UI launches runs;
    those named in `keep` go on running."""
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
    sensors = server.graphql(SENSORS_QUERY, {"selector": selector})["sensorsOrError"]["results"]
    stopped = []
    for sensor in sensors:
        if sensor["sensorState"]["status"] == "RUNNING" and sensor["name"] not in keep:
            result = server.graphql(STOP_SENSOR, {"id": sensor["sensorState"]["id"]})["stopSensor"]
            if result["__typename"] != "StopSensorMutationResult":
                msg = f"could not stop {sensor['name']}: {result}"
                raise RuntimeError(msg)
            stopped.append(sensor["name"])
    return stopped


DAEMON_QUERY = """
{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }
"""


def _run_queue_daemon_healthy(server: UiServer) -> bool:
    statuses = server.graphql(DAEMON_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
    return any(s["daemonType"] == "QUEUED_RUN_COORDINATOR" and s["healthy"] for s in statuses)


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
    port = free_port()
    server = UiServer(f"http://127.0.0.1:{port}", home, data_dir, env, logs)
    procs: list[subprocess.Popen] = []
    try:
        webserver = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml"]
        webserver += ["-h", "127.0.0.1", "-p", str(port)]
        procs.append(_spawn(webserver, env, logs / "webserver.log"))
        _wait(
            "the webserver",
            lambda: requests.get(f"{server.url}/server_info", timeout=5).ok,
            procs,
            server,
        )
        _wait("the code location", lambda: _location_loaded(server), procs, server)
        # The "Join the Dagster community" dialog would cover the page on the first visit.
        server.graphql("mutation { setNuxSeen }")
        if daemon:
            if not sensors:
                stop_sensors(server, keep_sensors)
            daemon_argv = [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]
            procs.append(_spawn(daemon_argv, env, logs / "daemon.log"))
            _wait("the daemon", lambda: _run_queue_daemon_healthy(server), procs, server)
        yield server
    finally:
        for proc in reversed(procs):
            stop_process(proc)
