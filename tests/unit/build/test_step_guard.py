"""The step guard (factory/build/step_guard.py) on real processes, spawned and fork-served.

`factory run`'s workers are forked by a fork server, so the kernel's parent of a step is the
server, not the process that asked for the worker. The guard must arm there (not mistake the
server for a new parent and exit), take the worker down when the `factory` process dies, and
still refuse to run for a coordinator that is already gone.
"""

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from factory.build.step_guard import die_with_parent

START_METHODS = ("spawn", "forkserver")


def _guard_and_report(marker: str) -> None:
    guarded = die_with_parent()
    Path(marker).write_text(f"{os.getpid()} {guarded}")


def _guard_then_wait(marker: str) -> None:
    _guard_and_report(marker)
    time.sleep(60)


def _coordinator_that_dies(method: str, marker: str, guard_after_s: float, armed: bool) -> None:
    """Start a child of `method`, then die without waiting for it to end: once the child is
    guarded (`armed`), or at once."""
    context = multiprocessing.get_context(method)
    child = context.Process(target=_late_guard, args=(marker, guard_after_s))
    child.start()
    Path(marker + ".started").write_text(str(child.pid))
    if armed:
        _wait_for(Path(marker))
    os._exit(0)


def _late_guard(marker: str, after_s: float) -> None:
    time.sleep(after_s)
    _guard_then_wait(marker)


def _wait_for(path: Path, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    pytest.fail(f"{path} was not written within {timeout_s} s")


def _gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("method", START_METHODS)
def test_a_child_of_a_live_coordinator_is_guarded_and_runs_on(method, tmp_path):
    marker = tmp_path / "guarded"
    child = multiprocessing.get_context(method).Process(
        target=_guard_and_report, args=(str(marker),)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    pid, guarded = marker.read_text().split()
    assert (int(pid), guarded) == (child.pid, "True")


def test_a_fork_served_worker_dies_with_the_process_that_asked_for_it(tmp_path):
    """The coordinator dies after the guard is armed: its fork server exits, and the kernel
    kills the worker."""
    marker = tmp_path / "guarded"
    coordinator = multiprocessing.get_context("spawn").Process(
        target=_coordinator_that_dies, args=("forkserver", str(marker), 0.0, True)
    )
    coordinator.start()
    pid = int(_wait_for(marker).split()[0])
    coordinator.join(30)
    assert _gone(pid), f"worker {pid} outlived its coordinator"


@pytest.mark.parametrize("method", START_METHODS)
def test_a_child_whose_coordinator_is_already_gone_does_not_run(method, tmp_path):
    """The coordinator dies before the guard is armed: the step exits instead of running on."""
    marker = tmp_path / "guarded"
    coordinator = multiprocessing.get_context("spawn").Process(
        target=_coordinator_that_dies, args=(method, str(marker), 1.0, False)
    )
    coordinator.start()
    pid = int(_wait_for(Path(str(marker) + ".started")))
    coordinator.join(30)
    assert _gone(pid, timeout_s=15)
    assert not marker.exists(), "the child ran on after its coordinator was gone"
