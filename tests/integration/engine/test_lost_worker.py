"""A `factory run` whose worker process is killed in the middle of a run says so and exits 1: every
combination it could not finish is reported NOT RECORDED, the matrix assets are reported as not
materialized, no traceback is shown, and no process of the run is left behind."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from factory.settings import PROJECT_ROOT
from tests.integration.dagster.test_cli import BIN, env_for
from tests.integration.stores import example_store_copy, manifest

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _gone_within(pids: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.timeout(300)
def test_a_killed_worker_is_reported_not_shown_as_a_traceback(services, tmp_path):
    store = example_store_copy(tmp_path, {"lost_one": manifest(), "lost_two": manifest()})
    env = env_for(tmp_path, store)
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
        servers = [p for p in _children(factory.pid) if "forkserver" in _cmdline(p)]
        assert len(servers) == 1, f"fork server of {factory.pid}: {servers}\n{''.join(lines)}"
        workers = _children(servers[0])
        assert len(workers) == 1, workers
        time.sleep(0.5)  # inside the first run
        os.kill(workers[0], signal.SIGKILL)
        rest, _ = factory.communicate(timeout=240)
    finally:
        if factory.poll() is None:
            factory.kill()
            factory.wait()
        factory.stdout.close()
    output = "".join(lines) + rest
    assert factory.returncode == 1, output
    assert "Traceback" not in output, output
    assert output.count("NOT RECORDED") == 2, output
    assert "ended unexpectedly" in output or "terminated abruptly" in output, output
    assert "did not materialize" in output, output
    assert "2 combination(s) could not be recorded" in output, output
    assert _gone_within(servers, 15), "the fork server outlived `factory run`"
