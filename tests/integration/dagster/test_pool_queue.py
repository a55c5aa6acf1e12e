"""The real queued run coordinator keeps each pool within its limit, with no head-of-line blocking.

A temp DAGSTER_HOME gets the project's dagster.yaml and pool limits through the project's own
start-up (`prepare_dagster_home`: amd64=2, arm64=1). `dagster-daemon` runs a test-only code
location (tests/integration/pool_queue) whose sensor submits 6 amd64 runs and then 3 arm64 runs
at once; each run is one step that sleeps. From the event logs and run records:

- never more steps of a pool in progress than its limit (the pool slots are held by steps: the
  project uses `granularity: op`);
- the arm64 runs, queued behind all the amd64 runs, start while amd64 runs are still queued.
"""

import os
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import FINISHED_STATUSES

from factory.services import server_process
from factory.settings import Settings
from factory_assets.instance import prepare_dagster_home
from factory_assets.pools import current_pool_limits
from tests.integration.dagster.pool_queue.definitions import RUNS, SLEEP_S

pytestmark = pytest.mark.integration

LIMITS = {"amd64": 2, "arm64": 1}
LOCATION = Path(__file__).parent / "pool_queue" / "definitions.py"
DEADLINE_S = 300


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end at t closes before a start at t)."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = peak = 0
    for _, delta in points:
        now += delta
        peak = max(peak, now)
    return peak


def _step_interval(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    """When the run's (one) step started and when it succeeded or failed."""
    ends = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    events = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, *ends})
    by_type = {e.dagster_event.event_type: e.timestamp for e in events if e.dagster_event}
    end = next(by_type[t] for t in ends if t in by_type)
    return by_type[dg.DagsterEventType.STEP_START], end


@pytest.fixture
def daemon_home(tmp_path, monkeypatch):
    """A DAGSTER_HOME prepared by the project's start-up, and a dagster-daemon serving it."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACTORY_POOL_LIMITS", ",".join(f"{p}={n}" for p, n in LIMITS.items()))
    home = prepare_dagster_home(Settings.from_env())
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - python_file:\n      relative_path: {LOCATION}\n"
        f"      working_directory: {Path.cwd()}\n      location_name: pool_queue\n"
    )
    daemon = server_process.spawn(
        [Path(sys.executable).with_name("dagster-daemon"), "run", "-w", workspace],
        tmp_path / "daemon.log",
        env={**os.environ, "POOL_QUEUE_SLEEP_S": str(SLEEP_S)},
    )
    try:
        yield home, tmp_path / "daemon.log"
    finally:
        # Only what this fixture started: the daemon and the processes of its session.
        server_process.stop(daemon)


def test_pools_queue_runs_within_their_limits(daemon_home):
    home, daemon_log = daemon_home
    total = sum(RUNS.values())
    started = time.monotonic()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert current_pool_limits(instance) == {**LIMITS, "gpu": 1}
        while True:
            records = instance.get_run_records()
            done = [r for r in records if r.dagster_run.status in FINISHED_STATUSES]
            if len(records) == total and len(done) == total:
                break
            assert time.monotonic() - started < DEADLINE_S, (
                f"{len(done)}/{total} runs finished after {DEADLINE_S}s; daemon log:\n"
                + daemon_log.read_text()[-4000:]
            )
            time.sleep(1)
        elapsed = time.monotonic() - started

        by_pool: dict[str, list] = {pool: [] for pool in RUNS}
        for record in records:
            run = record.dagster_run
            assert run.status == dg.DagsterRunStatus.SUCCESS, run.run_id
            enqueued = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)
            assert enqueued, f"run {run.run_id} did not go through the queue"
            by_pool[run.tags["test/pool"]].append(
                {
                    "queued": record.create_timestamp.timestamp(),
                    "run": (record.start_time, record.end_time),
                    "step": _step_interval(instance, run.run_id),
                }
            )

    assert {pool: len(runs) for pool, runs in by_pool.items()} == RUNS
    figures = {}
    for pool, runs in by_pool.items():
        step_peak = _max_overlap([r["step"] for r in runs])
        run_peak = _max_overlap([r["run"] for r in runs])
        figures[pool] = (step_peak, run_peak)
        assert step_peak <= LIMITS[pool], f"{pool}: {step_peak} steps at once"
        assert step_peak == LIMITS[pool], f"{pool}: the limit was never used ({step_peak})"
        # Runs too: a run is dequeued only when its step's pool has a free slot, and a new run
        # worker starts (seconds) well after the previous one ends (a fraction of a second).
        assert run_peak <= LIMITS[pool], f"{pool}: {run_peak} runs in progress at once"

    # arm64 runs were queued behind every amd64 run, yet one started while amd64 runs waited.
    first_arm64 = min(r["run"][0] for r in by_pool["arm64"])
    amd64_starts = sorted(r["run"][0] for r in by_pool["amd64"])
    assert max(r["queued"] for r in by_pool["amd64"]) <= min(r["queued"] for r in by_pool["arm64"])
    still_queued = [s for s in amd64_starts if s > first_arm64]
    assert still_queued, "every amd64 run had started before the first arm64 run"
    sys.stderr.write(
        f"\npool queue: {total} runs of {SLEEP_S}s in {elapsed:.1f}s; peak steps/runs in progress "
        + ", ".join(f"{p}={s}/{r}" for p, (s, r) in figures.items())
        + f"; first arm64 start with {len(still_queued)} amd64 runs still queued\n"
    )
