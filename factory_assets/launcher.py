"""`factory run`: materialize planned combinations through the Dagster instance at DAGSTER_HOME.

Each combination is one run of its platform's build job, executed in a worker process against the
instance, so the runs, their steps and materializations appear in `dagster dev` afterwards exactly
as if launched from the UI. Workers run side by side (one run = one partition: a run cannot span
two partitions definitions).
"""

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from factory.planning import PlanItem
from factory.platforms import platform as lookup_platform
from factory_assets.jobs import build_job_name, run_tags
from factory_assets.platform_chain import chain_step_name

QUIET_LOGGERS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass(frozen=True)
class RunOutcome:
    manifest_id: str
    platform: str
    run_id: str | None
    success: bool
    message: str
    seconds: float


def _failure_message(result) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            user = error.cause if error.cause else error
            return (user.message or error.message).strip().splitlines()[0]
    return "run failed"


def run_combination(item: PlanItem, force_rebuild: bool) -> RunOutcome:
    """Execute one combination's build job in this process against the DAGSTER_HOME instance."""
    import dagster as dg

    from factory_assets.definitions import defs

    started = time.monotonic()
    platform = lookup_platform(item.platform)
    job = defs.resolve_job_def(build_job_name(platform.slug))
    run_config = dict(QUIET_LOGGERS)
    if force_rebuild:
        run_config["ops"] = {chain_step_name(platform): {"config": {"force_rebuild": True}}}
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            partition_key=item.manifest_id,
            instance=instance,
            tags=run_tags(item),
            run_config=run_config,
            raise_on_error=False,
        )
    return RunOutcome(
        manifest_id=item.manifest_id,
        platform=item.platform,
        run_id=result.run_id,
        success=result.success,
        message="" if result.success else _failure_message(result),
        seconds=time.monotonic() - started,
    )


def materialize_matrix() -> bool:
    import dagster as dg

    from factory_assets.definitions import defs

    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("compatibility_matrix_job").execute_in_process(
            instance=instance, run_config=QUIET_LOGGERS, raise_on_error=False
        )
    return result.success


def run_items(
    items: list[PlanItem],
    *,
    parallel: int,
    force_rebuild: bool,
    on_start: Callable[[PlanItem], None],
    on_done: Callable[[PlanItem, RunOutcome], None],
) -> list[RunOutcome]:
    """Run the items, high priority first, `parallel` at a time in worker processes."""
    ordered = sorted(items, key=lambda i: (i.priority != "high", i.manifest_id, i.platform))
    outcomes = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, parallel), mp_context=context) as pool:
        futures = {}
        for item in ordered:
            futures[pool.submit(run_combination, item, force_rebuild)] = item
            on_start(item)
        for future in as_completed(futures):
            item = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # a worker that died: report, keep the others going
                outcome = RunOutcome(
                    item.manifest_id, item.platform, None, False, f"worker failed: {exc}", 0.0
                )
            outcomes.append(outcome)
            on_done(item, outcome)
    return outcomes
