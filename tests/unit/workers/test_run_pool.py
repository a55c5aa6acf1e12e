"""`factory run`'s worker pool on a fork server of its own: workers forked from it see the
environment of the process that starts them, even when that process changed it since the server
started."""

import os
import time

import pytest

from factory.workers import run_pool

MARK = "FACTORY_TEST_WORKER_MARK"


@pytest.fixture(autouse=True)
def own_fork_server(monkeypatch):
    """These tests are about the fork server a command starts for itself; the resident one has
    its own (test_resident.py)."""
    monkeypatch.setenv("FACTORY_WORKER_IDLE_S", "0")


def _environment_value(name: str) -> str | None:
    return os.environ.get(name)


@pytest.fixture
def no_preload(monkeypatch):
    """Workers without the code location: these tests are about the environment."""
    monkeypatch.setattr(run_pool, "PRELOAD", ())


def _seen_by_a_worker(context) -> str | None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_environment_value, MARK).result(timeout=60)


def test_workers_see_the_environment_their_pool_was_made_in(no_preload, monkeypatch):
    monkeypatch.setenv(MARK, "first")
    assert _seen_by_a_worker(run_pool.worker_context()) == "first"
    monkeypatch.setenv(MARK, "second")
    assert _seen_by_a_worker(run_pool.worker_context()) == "second"
    monkeypatch.delenv(MARK)
    assert _seen_by_a_worker(run_pool.worker_context()) is None


def test_the_same_environment_keeps_the_running_server(no_preload, monkeypatch):
    monkeypatch.setenv(MARK, "kept")
    run_pool.worker_context()
    _seen_by_a_worker(run_pool.worker_context())
    server = run_pool.multiprocessing.forkserver._forkserver._forkserver_pid
    assert _seen_by_a_worker(run_pool.worker_context()) == "kept"
    assert run_pool.multiprocessing.forkserver._forkserver._forkserver_pid == server


def test_an_unknown_task_is_refused():
    with pytest.raises(ValueError, match=r"unknown worker task 'os\.system'"):
        run_pool.Workers.submit(object.__new__(run_pool.Workers), "os.system", "true")


def test_making_the_pool_does_not_wait_for_the_servers_preload(monkeypatch, tmp_path):
    """The fork server answers a new worker only after its preload; the pool is made at once
    all the same, and its workers run tasks once the preload is done."""
    gate = tmp_path / "gate"
    monkeypatch.setenv("FACTORY_TEST_PRELOAD_GATE", str(gate))
    monkeypatch.setattr(run_pool, "PRELOAD", ("tests.unit.workers.gated_preload",))
    started = time.monotonic()
    with run_pool.Workers(2) as workers:
        made_in = time.monotonic() - started
        time.sleep(0.5)
        assert not any(workers.pool._processes or {}), "a worker started before the preload ended"
        gate.touch()
        pids = {workers.pool.submit(os.getpid).result(timeout=60) for _ in range(8)}
    # The preload holds the server for up to 60 s: a pool that waited for it took that long.
    assert made_in < 5, made_in
    assert pids and os.getpid() not in pids


def test_a_first_task_that_is_not_a_task_is_refused_before_anything_starts(no_preload):
    with pytest.raises(ValueError, match="unknown worker task 'nope'"):
        run_pool.Workers(1, first=("nope",))
