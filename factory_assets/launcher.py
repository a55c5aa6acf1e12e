"""`factory run`'s Dagster side: what its worker processes (factory/workers/run_pool.py) do.

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

import contextlib
import os
import time
from pathlib import Path

from factory.plan.decisions import PlanItem
from factory.platforms import platform as lookup_platform
from factory.safe_json import exception_line, printable
from factory.workers.run_pool import RunOutcome
from factory_assets.jobs import build_job_name, run_tags
from factory_assets.platform_chain import chain_step_name
from factory_assets.sqlite_storage import release_connections

QUIET_LOGGERS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# Every run of one `factory run` carries its invocation's id (factory/workers/run_pool.py).
INVOCATION_TAG = "factory/invocation"


def _failure_message(result) -> str:
    """The first step failure's message; else the run's own failure (a run that failed before
    any step, for instance on an instance part its dagster.yaml names that cannot be loaded)."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            return _first_line(event.step_failure_data.error)
    for event in result.all_events:
        if event.is_run_failure and event.job_failure_data and event.job_failure_data.error:
            return f"run failed: {_first_line(event.job_failure_data.error)}"
    return "run failed"


def _first_line(error) -> str:
    user = error.cause if error.cause else error
    lines = (user.message or error.message or "").strip().splitlines()
    return printable(lines[0] if lines else type(error).__name__, limit=300)


def uses_celery(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return (env.get("FACTORY_EXECUTOR") or "").strip().lower() == "celery"


_WORKER_INSTANCE = None


def worker_instance():
    """This worker process's DagsterInstance, opened once: a worker runs many combinations, and
    opening the instance (storage, migrations check) costs about half a second each time."""
    global _WORKER_INSTANCE
    if _WORKER_INSTANCE is None:
        _WORKER_INSTANCE = _open_instance()
    return _WORKER_INSTANCE


def _open_instance():
    """The instance at DAGSTER_HOME; the local SQLite one with its engines kept
    (factory_assets/sqlite_storage.py), an operator's storage (PostgreSQL) as configured; the
    compute logs captured to files without an echo (factory_assets/compute_logs.py) unless its
    dagster.yaml names a compute log manager."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    from factory.services.dagster_home import first_open_lock, names_compute_logs, names_storage
    from factory_assets.compute_logs import file_captured_overrides
    from factory_assets.instance import open_instance, unusable_instance
    from factory_assets.sqlite_storage import kept_engine_overrides

    home = os.environ.get("DAGSTER_HOME", "")
    if not os.path.isabs(home):
        return open_instance()  # which says what is wrong with DAGSTER_HOME
    config = Path(home) / "dagster.yaml"
    # An operator's storage is made on first open too: the lock covers both.
    with first_open_lock(Path(home)):
        overrides = {}
        if not names_storage(config):
            overrides.update(kept_engine_overrides(home))
        if not names_compute_logs(config):
            overrides.update(file_captured_overrides(home))
        try:
            ref = InstanceRef.from_dir(home, overrides=overrides)
            return dg.DagsterInstance.from_ref(ref)
        except Exception as exc:  # as open_instance says
            raise unusable_instance(exc) from None


def run_combination(item: PlanItem, force_rebuild: bool, invocation: str) -> RunOutcome:
    """Execute one combination's build job against the DAGSTER_HOME instance: in this process,
    or with FACTORY_EXECUTOR=celery on a worker of its pool (this process coordinates)."""
    from factory_assets.definitions import defs

    started = time.monotonic()
    platform = lookup_platform(item.platform)
    job_name = build_job_name(platform.slug)
    run_config = dict(QUIET_LOGGERS)
    if force_rebuild:
        run_config["ops"] = {chain_step_name(platform): {"config": {"force_rebuild": True}}}
    tags = {**run_tags(item), INVOCATION_TAG: invocation}
    instance = worker_instance()
    try:
        if uses_celery():
            success, run_id, message = _run_through_celery(
                instance, job_name, item, tags, run_config
            )
        else:
            result = defs.resolve_job_def(job_name).execute_in_process(
                partition_key=item.manifest_id,
                instance=instance,
                tags=tags,
                run_config=run_config,
                raise_on_error=False,
            )
            success, run_id = result.success, result.run_id
            message = "" if result.success else _failure_message(result)
    finally:
        release_connections(instance)
    return RunOutcome(
        manifest_id=item.manifest_id,
        platform=item.platform,
        run_id=run_id,
        success=success,
        message=message,
        seconds=time.monotonic() - started,
    )


def _run_through_celery(instance, job_name: str, item: PlanItem, tags: dict, run_config: dict):
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
        tags={**tags, PARTITION_NAME_TAG: item.manifest_id},
        raise_on_error=False,
    )
    message = "" if result.success else _failure_message(result)
    return result.success, result.run_id, message


def materialize_matrix() -> bool:
    """Materialize `compatibility_matrix` and `multiarch_index` (in this process)."""
    from factory_assets.definitions import defs

    instance = worker_instance()
    try:
        result = defs.resolve_job_def("compatibility_matrix_job").execute_in_process(
            instance=instance, run_config=QUIET_LOGGERS, raise_on_error=False
        )
    finally:
        release_connections(instance)
    return result.success


def load_code_location() -> None:
    """Resolve the jobs a worker runs and open the instance, once per process: done by the fork
    server before it forks the workers (factory_assets/worker_start.py), so a worker finds both
    done. An instance that cannot be opened is left for the task that needs it to report."""
    from factory_assets.definitions import defs

    defs.resolve_job_def("compatibility_matrix_job")
    with contextlib.suppress(Exception):
        worker_instance()


def start_worker() -> None:
    """Everything a worker needs before its first run: the code location, the instance and the
    template of a new run's database, then no open connection (a fork server does this once,
    before it forks; a resident server's worker does it as it starts)."""
    from factory_assets.sqlite_storage import prepare_for_fork

    load_code_location()
    prepare_for_fork(worker_instance())


def prepare_instance(sync: bool) -> tuple[str, int, int]:
    """In a worker: the pool limits, and (with `sync`) the store's partitions, in the instance
    this worker opened at DAGSTER_HOME (whose dagster.yaml `factory run` wrote). Returns (home,
    partitions added, removed)."""
    from factory.settings import Settings
    from factory.store.load import load_store
    from factory_assets.instance import sync_partitions
    from factory_assets.pools import apply_pool_limits

    settings = Settings.from_env()
    instance = worker_instance()
    apply_pool_limits(instance)
    added = removed = 0
    if sync:
        added, removed = sync_partitions(instance, load_store(settings.manifest_store))
    return str(settings.dagster_home), added, removed


def close_lost_runs(invocation: str) -> tuple[int, int | str]:
    """Mark the runs tagged with `invocation` that have not finished as failed (their worker was
    lost, and nothing else would end them), and remove the test containers their steps left on
    this host's engine. Returns (runs marked, containers removed or why none could be)."""
    import dagster as dg
    from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

    instance = worker_instance()
    try:
        runs = instance.get_runs(
            dg.RunsFilter(tags={INVOCATION_TAG: invocation}, statuses=NOT_FINISHED_STATUSES)
        )
        for run in runs:
            instance.report_run_failed(
                run, message="the `factory run` worker process executing this run was lost"
            )
    finally:
        release_connections(instance)
    return len(runs), _remove_lost_test_containers([run.run_id for run in runs])


def _remove_lost_test_containers(run_ids: list[str]) -> int | str:
    # Under Celery the steps run on other hosts' workers, which were not lost: theirs stay.
    if not run_ids or uses_celery():
        return 0
    from factory.build.engine import Engine
    from factory.errors import FactoryError
    from factory.services.embedded import docker_host
    from factory.settings import Settings

    try:
        engine = Engine(docker_host(Settings.from_env()))
        try:
            return engine.remove_test_containers_of(run_ids)
        finally:
            engine.client.close()
    except FactoryError as exc:
        return exception_line(exc)
    except Exception as exc:  # the engine's answer (docker's or requests' errors)
        return f"{type(exc).__name__}: {exception_line(exc)}"
