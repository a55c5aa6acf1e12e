"""A test-only code location for the pool queue test: one sleeping asset per pool.

The assets carry the same pools as Factory's amd64 and arm64 chains but only sleep, so the test is
about queueing, not builds. A sensor floods the queue once (amd64 first, then arm64), the way
Factory's sensors and backfills submit many runs at once.
"""

import os
import time

import dagster as dg

SLEEP_S = float(os.environ.get("POOL_QUEUE_SLEEP_S", "4"))
RUNS = {"amd64": 6, "arm64": 3}


def _sleeper(pool: str) -> dg.AssetsDefinition:
    @dg.asset(name=f"{pool}_step", pool=pool)
    def step() -> None:
        """Holds a slot of its pool for SLEEP_S seconds."""
        time.sleep(SLEEP_S)

    return step


ASSETS = [_sleeper(pool) for pool in RUNS]
JOBS = [dg.define_asset_job(f"{pool}_job", selection=[f"{pool}_step"]) for pool in RUNS]


@dg.sensor(jobs=JOBS, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def flood_sensor(context: dg.SensorEvaluationContext):
    """Submit every run in one tick, then nothing (the run keys also keep it to once)."""
    if context.cursor:
        return dg.SkipReason("already submitted")
    requests = [
        dg.RunRequest(run_key=f"{pool}-{i}", job_name=f"{pool}_job", tags={"test/pool": pool})
        for pool, count in RUNS.items()
        for i in range(count)
    ]
    return dg.SensorResult(run_requests=requests, cursor="submitted")


# In-process steps: the run worker claims its step's pool slot exactly as the multiprocess executor
# does, with one process per run instead of two on this 2-core machine.
defs = dg.Definitions(
    assets=ASSETS, jobs=JOBS, sensors=[flood_sensor], executor=dg.in_process_executor
)
