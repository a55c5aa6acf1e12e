"""The Dagster webserver and daemon of a throw-away instance, and the GraphQL calls made to them.

Shared by the load benchmark (bench/load.py) and the UI test helper (tests/integration/ui_server.py,
which the browser, submit and results-consumer tests and docs/screenshots.py use). `DagsterUi`
starts `dagster-webserver` on a free loopback port and `dagster-daemon run` for the project's
`workspace.yaml` (factory/services/server_process.py: own sessions, logs under one folder), waits
until the webserver answers and the code location has loaded, stops the code location's sensors
that would launch runs of their own, and stops exactly the processes it started.
"""

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests

from factory.services import server_process
from factory.settings import PROJECT_ROOT

LOCATION = "factory"
REPOSITORY = "__repository__"
BIN = Path(sys.executable).parent
# Answers that mean "not yet": the server is not listening, or GraphQL has no location yet.
NOT_YET = (requests.RequestException, RuntimeError)

LOCATION_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""
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
DAEMON_QUERY = """
{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }
"""


class LocationLoadError(Exception):
    """The code location failed to load: waiting longer will not help."""


class DagsterUi:
    """A webserver (and daemon) on `port`, started with `env`, logging into the folder `logs`."""

    def __init__(
        self,
        logs: Path,
        env: Mapping[str, str],
        *,
        port: int | None = None,
        graphql_timeout_s: float = 30.0,
    ):
        self.logs = logs
        self.env = dict(env)
        self.url = f"http://127.0.0.1:{port or server_process.free_port()}"
        self.graphql_timeout_s = graphql_timeout_s
        self.procs: list[subprocess.Popen] = []

    def graphql(self, query: str, variables: Mapping | None = None) -> dict:
        response = requests.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=self.graphql_timeout_s,
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            msg = f"GraphQL errors: {body['errors']}"
            raise RuntimeError(msg)
        return body["data"]

    def log_tail(self, lines: int = server_process.LOG_TAIL_LINES) -> str:
        return server_process.log_tail(sorted(self.logs.glob("*.log")), lines)

    def wait_for(self, what: str, check) -> None:
        """Wait until `check()` is true while every process started here still runs."""
        server_process.wait_until(
            what, check, self.procs, lambda: sorted(self.logs.glob("*.log")), retry_on=NOT_YET
        )

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen:
        proc = server_process.spawn(argv, self.logs / log_name, env=self.env, cwd=PROJECT_ROOT)
        self.procs.append(proc)
        return proc

    def spawn_webserver(self) -> subprocess.Popen:
        port = self.url.rsplit(":", 1)[1]
        argv = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1"]
        return self._spawn([*argv, "-p", port], "webserver.log")

    def wait_for_webserver(self) -> None:
        """Until the webserver answers and has loaded the code location."""
        self.wait_for(
            "the webserver", lambda: requests.get(f"{self.url}/server_info", timeout=5).ok
        )
        self.wait_for("the code location", self.location_loaded)

    def spawn_daemon(self) -> subprocess.Popen:
        return self._spawn(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], "daemon.log"
        )

    def wait_for_daemon(self) -> None:
        """Until the daemon's run queue coordinator reports healthy (it launches queued runs)."""
        self.wait_for("the daemon", self.run_queue_daemon_healthy)

    def stop(self) -> None:
        """Stop what was started here, the daemon first, each with its process group."""
        for proc in reversed(self.procs):
            server_process.stop(proc)

    def location_loaded(self) -> bool:
        data = self.graphql(LOCATION_QUERY)["workspaceOrError"]
        entry = {e["name"]: e for e in data.get("locationEntries", [])}.get(LOCATION)
        if not entry or entry["loadStatus"] != "LOADED":
            return False
        location = entry["locationOrLoadError"] or {}
        if location.get("__typename") == "PythonError":
            msg = f"code location {LOCATION} failed to load: {location['message']}"
            raise LocationLoadError(msg)
        return location.get("__typename") == "RepositoryLocation"

    def stop_sensors(self, keep: Sequence[str] = ()) -> list[str]:
        """Stop the code location's running sensors (they default to running) but those named in
        `keep`, so runs come only from whoever drives this server; the names stopped."""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
        sensors = self.graphql(SENSORS_QUERY, {"selector": selector})["sensorsOrError"]["results"]
        stopped = []
        for sensor in sensors:
            if sensor["sensorState"]["status"] != "RUNNING" or sensor["name"] in keep:
                continue
            result = self.graphql(STOP_SENSOR, {"id": sensor["sensorState"]["id"]})["stopSensor"]
            if result["__typename"] != "StopSensorMutationResult":
                msg = f"could not stop {sensor['name']}: {result}"
                raise RuntimeError(msg)
            stopped.append(sensor["name"])
        return stopped

    def run_queue_daemon_healthy(self) -> bool:
        statuses = self.graphql(DAEMON_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
        return any(s["daemonType"] == "QUEUED_RUN_COORDINATOR" and s["healthy"] for s in statuses)
