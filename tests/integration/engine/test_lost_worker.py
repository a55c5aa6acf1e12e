"""A `factory run` whose worker process is killed in the middle of a run says so and exits 1: every
combination it could not finish is reported NOT RECORDED, the matrix assets are reported as not
materialized, the lost run is marked failed (not left STARTED) and its test container removed,
no traceback is shown, and no worker of the run is left behind (the resident worker server
stays, for the next command)."""

import os
import signal
import subprocess
import time
import uuid

import dagster as dg
import docker
import pytest
from dagster._core.instance.ref import InstanceRef

from factory.settings import PROJECT_ROOT
from factory.workers import resident
from tests.integration.dagster.test_cli import BIN, env_for
from tests.integration.stores import example_store_copy, manifest
from tests.process_tree import alive, children

pytestmark = pytest.mark.integration

UNFINISHED = {
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
}


def _gone_within(pids: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


def _runs(home: str) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(home)) as instance:
        return list(instance.get_runs())


def _wait_for_a_started_run(home: str, factory: subprocess.Popen, timeout_s: float) -> None:
    """Until the instance shows a run STARTED: the worker is then inside it (a slow suite keeps
    it there for half a minute)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and factory.poll() is None:
        if any(r.status == dg.DagsterRunStatus.STARTED for r in _runs(home)):
            return
        time.sleep(0.2)
    pytest.fail("no run of `factory run` started")


def _wait_for_the_suite(engine: str, suite: str, factory: subprocess.Popen, timeout_s: float):
    """Until the slow suite's container exists: the worker is then inside its run's tests."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and factory.poll() is None:
        if _test_containers(engine, suite):
            return
        time.sleep(0.2)
    pytest.fail("the slow suite's container never appeared")


def _test_containers(engine: str, suite: str, *, remove: bool = False) -> int:
    """How many test containers of `suite` the engine holds (removing them with `remove`)."""
    client = docker.DockerClient(base_url=engine)
    try:
        found = client.containers.list(all=True, filters={"label": f"io.factory.suite={suite}"})
        for container in found if remove else ():
            container.remove(force=True)
        return len(found)
    finally:
        client.close()


@pytest.mark.timeout(300)
def test_a_killed_worker_is_reported_not_shown_as_a_traceback(services, tmp_path):
    suite = f"slow_{uuid.uuid4().hex[:8]}"
    rel = f"tests/{suite}.sh"
    slow = {**manifest(tests=[suite]), "priority": "high"}  # run first
    store = example_store_copy(
        tmp_path,
        {"lost_one": slow, "lost_two": manifest()},
        suites={suite: {"path": rel, "timeout_s": 60}},
        files={rel: "sleep 30\n"},
    )
    # A resident worker server of this test's own: its workers are this command's only.
    folder = tmp_path / "workers"
    env = {**env_for(tmp_path, store), resident.DIR_ENV: str(folder)}
    home = env["DAGSTER_HOME"]
    only = ["--manifest-id", "lost_one", "--manifest-id", "lost_two"]
    factory = subprocess.Popen(
        [BIN / "factory", "run", "--parallel", "1", *only],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        for line in factory.stdout:
            lines.append(line)
            if "queued" in line:
                break
        servers = [s["pid"] for s in resident.running_servers({resident.DIR_ENV: str(folder)})]
        assert len(servers) == 1, f"resident servers in {folder}: {servers}\n{''.join(lines)}"
        _wait_for_a_started_run(home, factory, timeout_s=120)
        workers = children(servers[0])
        assert len(workers) == 1, workers
        _wait_for_the_suite(env["DOCKER_HOST"], suite, factory, timeout_s=120)
        os.kill(workers[0], signal.SIGKILL)
        rest, _ = factory.communicate(timeout=240)
        left = _test_containers(env["DOCKER_HOST"], suite)
    finally:
        if factory.poll() is None:
            factory.kill()
            factory.wait()
        factory.stdout.close()
        _test_containers(env["DOCKER_HOST"], suite, remove=True)  # whatever the outcome
        resident.stop_servers({resident.DIR_ENV: str(folder)})
    output = "".join(lines) + rest
    assert factory.returncode == 1, output
    assert "Traceback" not in output, output
    assert output.count("NOT RECORDED") == 2, output
    assert "ended unexpectedly" in output or "terminated abruptly" in output, output
    assert "did not materialize" in output, output
    assert "2 combination(s) could not be recorded" in output, output
    assert "marked 1 run(s) the lost worker left unfinished as failed" in output, output
    assert "removed 1 test container(s) the lost worker left" in output, output
    assert left == 0
    # The server stays for the next command; no worker of this one is left.
    assert _gone_within(workers, 15), "the lost worker's process is still there"
    assert children(servers[0]) == [], "a worker of this command outlived it"
    runs = _runs(home)
    assert [r for r in runs if r.status in UNFINISHED] == [], [(r.run_id, r.status) for r in runs]
    [lost] = runs
    assert lost.status == dg.DagsterRunStatus.FAILURE
    assert lost.tags.get("factory/invocation")
