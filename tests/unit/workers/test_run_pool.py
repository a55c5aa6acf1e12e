"""`factory run`'s worker pool: workers forked from a fork server see the environment of the
process that starts them, even when that process changed it since the server started."""

import os

import pytest

from factory.workers import run_pool

MARK = "FACTORY_TEST_WORKER_MARK"


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
