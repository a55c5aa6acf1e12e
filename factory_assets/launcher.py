"""`factory run`: materialize planned combinations through the Dagster instance at DAGSTER_HOME.

Each combination is one run of its platform's build job, executed in a worker process against the
instance, so the runs, their steps and materializations appear in `dagster dev` afterwards exactly
as if launched from the UI. Workers run side by side (one run = one partition: a run cannot span
two partitions definitions).

With FACTORY_EXECUTOR=celery the run is not executed here: each run's coordinator (a process of
`factory run`) loads the job from the code location as a reconstructable job, and dagster-celery
submits the combination's one step to its pool's queue and waits for a `factory worker` of that
pool, on whatever host, to run it. The instance must then be one every worker reaches
(PostgreSQL), as must the record store (S3) and the registry.
"""

import atexit
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from factory.plan.decisions import PlanItem
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


def uses_celery(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return (env.get("FACTORY_EXECUTOR") or "").strip().lower() == "celery"


_WORKER_INSTANCE = None


def _worker_instance():
    """This worker process's DagsterInstance, opened once: a worker runs many combinations, and
    opening the instance (storage, migrations check) costs about half a second each time."""
    global _WORKER_INSTANCE
    if _WORKER_INSTANCE is None:
        import dagster as dg

        _WORKER_INSTANCE = dg.DagsterInstance.get()
    return _WORKER_INSTANCE


def run_combination(item: PlanItem, force_rebuild: bool) -> RunOutcome:
    """Execute one combination's build job against the DAGSTER_HOME instance: in this process,
    or with FACTORY_EXECUTOR=celery on a worker of its pool (this process coordinates)."""
    from factory_assets.definitions import defs

    started = time.monotonic()
    platform = lookup_platform(item.platform)
    job_name = build_job_name(platform.slug)
    run_config = dict(QUIET_LOGGERS)
    if force_rebuild:
        run_config["ops"] = {chain_step_name(platform): {"config": {"force_rebuild": True}}}
    instance = _worker_instance()
    if uses_celery():
        success, run_id, message = _run_through_celery(instance, job_name, item, run_config)
    else:
        result = defs.resolve_job_def(job_name).execute_in_process(
            partition_key=item.manifest_id,
            instance=instance,
            tags=run_tags(item),
            run_config=run_config,
            raise_on_error=False,
        )
        success, run_id = result.success, result.run_id
        message = "" if result.success else _failure_message(result)
    return RunOutcome(
        manifest_id=item.manifest_id,
        platform=item.platform,
        run_id=run_id,
        success=success,
        message=message,
        seconds=time.monotonic() - started,
    )


def _run_through_celery(instance, job_name: str, item: PlanItem, run_config: dict):
    """Run the job with the code location's Celery executor; this process is the coordinator."""
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.storage.tags import PARTITION_NAME_TAG

    from factory.settings import PROJECT_ROOT

    repository = ReconstructableRepository.for_module(
        "factory_assets.definitions", "defs", working_directory=str(PROJECT_ROOT)
    )
    job = repository.get_reconstructable_job(job_name)
    result = dg.execute_job(
        job,
        instance=instance,
        run_config=run_config,
        tags={**run_tags(item), PARTITION_NAME_TAG: item.manifest_id},
        raise_on_error=False,
    )
    message = "" if result.success else _failure_message(result)
    return result.success, result.run_id, message


def materialize_matrix() -> bool:
    """Materialize `compatibility_matrix` and `multiarch_index` (in this process)."""
    from factory_assets.definitions import defs

    result = defs.resolve_job_def("compatibility_matrix_job").execute_in_process(
        instance=_worker_instance(), run_config=QUIET_LOGGERS, raise_on_error=False
    )
    return result.success


def _load_code_location() -> None:
    """Worker start-up: import the code location (the slow part: Dagster and every asset)."""
    from factory_assets.definitions import defs

    defs.resolve_job_def("compatibility_matrix_job")
    atexit.register(_leave_without_teardown)


def _leave_without_teardown() -> None:
    """A worker's last act, once the pool has told it to stop and its results are sent: tearing
    down an interpreter that holds Dagster and a code location takes a second or two, and
    nothing in it needs it (records and runs are committed as they happen). Output is flushed,
    logging shut down, and the process ends at once."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _started() -> None:
    """A no-op task: submitting one per worker starts them all at once."""


def prepare_instance(sync: bool) -> tuple[str, int, int]:
    """In a worker: DAGSTER_HOME's dagster.yaml and pool limits, and (with `sync`) the store's
    partitions. Returns (home, partitions added, removed)."""
    from factory.settings import Settings
    from factory.store.load import load_store
    from factory_assets.instance import prepare_dagster_home, sync_partitions

    settings = Settings.from_env()
    home = prepare_dagster_home(settings)
    added = removed = 0
    if sync:
        added, removed = sync_partitions(_worker_instance(), load_store(settings.manifest_store))
    return str(home), added, removed


class Workers:
    """`factory run`'s worker processes. They start as soon as the plan says there is work, and
    each imports the code location once while the rest is prepared; every Dagster call of the
    run (instance set-up, the combinations, the matrix) then happens in a warm worker, so the
    `factory` process itself never imports Dagster."""

    def __init__(self, parallel: int):
        self.count = max(1, parallel)
        self.prepared = None  # the instance set-up's future, when the caller submits one
        self.pool = ProcessPoolExecutor(
            max_workers=self.count,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_load_code_location,
        )
        for _ in range(self.count):
            self.pool.submit(_started)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc_info) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def call(self, fn: Callable, *args):
        """Run fn(*args) in a worker and return its result (its exception is raised here)."""
        return self.pool.submit(fn, *args).result()

    def run(
        self,
        items: list[PlanItem],
        *,
        force_rebuild: bool,
        on_start: Callable[[PlanItem], None],
        on_done: Callable[[PlanItem, RunOutcome], None],
        with_matrix: bool = True,
    ) -> tuple[list[RunOutcome], bool]:
        """Run the items, high priority first; then (`with_matrix`) the matrix assets. Returns
        the outcomes and whether the matrix materialized."""
        ordered = sorted(items, key=PlanItem.queue_order)
        outcomes = []
        futures = {}
        for item in ordered:
            futures[self.pool.submit(run_combination, item, force_rebuild)] = item
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
        if not with_matrix:
            return outcomes, False
        try:
            matrix_ok = self.call(materialize_matrix)
        except Exception:  # a worker that died: the caller warns
            matrix_ok = False
        return outcomes, matrix_ok


def run_items(
    items: list[PlanItem],
    *,
    parallel: int,
    force_rebuild: bool,
    on_start: Callable[[PlanItem], None],
    on_done: Callable[[PlanItem, RunOutcome], None],
    with_matrix: bool = True,
) -> tuple[list[RunOutcome], bool]:
    """Run the items `parallel` at a time in fresh workers, then (`with_matrix`) the matrix."""
    with Workers(min(parallel, max(1, len(items)))) as workers:
        return workers.run(
            items,
            force_rebuild=force_rebuild,
            on_start=on_start,
            on_done=on_done,
            with_matrix=with_matrix,
        )
