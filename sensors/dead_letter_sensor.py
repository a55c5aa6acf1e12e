"""Dead letters: a build run that failed for good gets `dlq/<key>.json` (see `factory.records.dlq`).

A run-failure sensor rather than code in the assets, because a run can fail where no asset code
runs (the run worker dies, a step fails before it could record anything), and because only after
the run has ended is it known that no retry is left: step retries have run their course, and a
run that the instance will launch again (`dagster/will_retry`) is judged when its retry ends.

The sensor reads what the run left: the build_id that the chain's final failure carries in its
metadata, else a record written by this run (records carry `dagster.run_id`). A transient `error`
record becomes a letter keyed by its build_id; a `fail` or deterministic `error` record is a
result and is left alone; a run with no record becomes a letter keyed by its run id, with the
stage, message and attempts read from the run's step failure events.
"""

from datetime import UTC, datetime

import dagster as dg

from factory.errors import FactoryError
from factory.platforms import PLATFORMS, Platform
from factory.records import dlq
from factory.records.model import CompatibilityRecord
from factory.records.store import RecordStore as Store
from factory_assets.alerts import alert_dead_letter
from factory_assets.jobs import BUILD_JOBS
from factory_assets.platform_chain import STAGE_OF_ASSET
from resources import RecordStore

BUILD_JOB_NAMES = frozenset(job.name for job in BUILD_JOBS)
# Tags the instance sets on runs: a failed run that run retries will launch again, and which
# launch of the run this is (dagster.yaml `run_retries`).
WILL_RETRY_TAG = "dagster/will_retry"
RETRY_NUMBER_TAG = "dagster/retry_number"
BY_SLUG = {p.slug: p for p in PLATFORMS}
LOG_EVENTS = 40
# Events that say what a run meant to do, not what happened: left out of a letter's log tail.
NOISE = frozenset({dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED})


def chain_step(step_key: str | None) -> Platform | None:
    """The platform of a chain step key (`linux_amd64__chain`) or of one of its assets'
    keys joined by `__` (`linux_amd64__image`), else None."""
    slug, _, name = (step_key or "").rpartition("__")
    if slug in BY_SLUG and (name == "chain" or name in STAGE_OF_ASSET):
        return BY_SLUG[slug]
    return None


def is_build_run(run: dg.DagsterRun, failures: list[dg.DagsterEvent]) -> bool:
    """A platform build job's run, or any run that materialized a chain step (a UI launch of a
    selection runs as an implicit asset job, not as `build_<slug>`)."""
    selected = ("__".join(key.path) for key in run.asset_selection or ())
    return (
        run.job_name in BUILD_JOB_NAMES
        or any(chain_step(key) for key in selected)
        or any(chain_step(e.step_key) for e in failures)
    )


def _failure_message(event: dg.DagsterEvent) -> str:
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    if data.error is None:
        return event.message or "step failed"
    user = data.error.cause or data.error
    return (user.message or data.error.message).strip()


def _metadata_text(event: dg.DagsterEvent, name: str) -> str | None:
    data = event.step_failure_data.user_failure_data
    value = data.metadata.get(name) if data is not None else None
    return None if value is None else str(value.value)


def _record_of(
    store: Store, run_id: str, failures: list[dg.DagsterEvent]
) -> CompatibilityRecord | None:
    for event in failures:
        build_id = _metadata_text(event, "build_id")
        data = store.get("record", build_id) if build_id else None
        if data is not None:
            return CompatibilityRecord.model_validate_json(data)
    # No failure names a build_id (the worker died, or the step failed outside the chain's error
    # handling): a record of this run may still exist. The index finds it by run id.
    if store.index is not None:
        try:
            return store.index.record_of_run(run_id)
        except FactoryError:
            pass  # the index cannot answer: the scan below still can
    return next((r for r in store.records() if r.dagster.run_id == run_id), None)


def _attempts(instance: dg.DagsterInstance, run_id: str, step_key: str | None) -> int:
    retries = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY
    ).records
    return 1 + sum(1 for r in retries if r.event_log_entry.step_key == step_key)


def _run_log_tail(instance: dg.DagsterInstance, run_id: str) -> str:
    """The run's last events as the UI shows them: what an operator reads first."""
    records = instance.get_records_for_run(run_id, limit=LOG_EVENTS, ascending=False).records
    lines = []
    for record in reversed(records):
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is not None and event.event_type in NOISE:
            continue
        text = (event.message if event is not None else None) or entry.user_message
        when = datetime.fromtimestamp(entry.timestamp, UTC).strftime("%H:%M:%S")
        lines.append(f"{when} {entry.step_key or '-'} {text}")
    return "\n".join(lines)


def _failed_at(instance: dg.DagsterInstance, run_id: str) -> str:
    run_record = instance.get_run_record_by_id(run_id)
    end = run_record.end_time if run_record is not None else None
    when = datetime.fromtimestamp(end, UTC) if end else datetime.now(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dead_letter_for(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    failure_event: dg.DagsterEvent,
    failures: list[dg.DagsterEvent],
    store: Store,
) -> dlq.DeadLetter | None:
    """The letter a failed build run deserves, or None when its failure is a recorded result."""
    failed_at = _failed_at(instance, run.run_id)
    record = _record_of(store, run.run_id, failures)
    if record is not None:
        if not dlq.needs_dead_letter(record):
            return None
        build_id = record.build_id
        has_error_file = store.get("error", build_id) is not None
        return dlq.letter_for_record(
            record,
            run_id=run.run_id,
            job_name=run.job_name,
            failed_at=failed_at,
            record_uri=store.uri("record", build_id),
            error_uri=store.uri("error", build_id) if has_error_file else None,
            run_log=_run_log_tail(instance, run.run_id),
        )
    failure = next((e for e in failures if chain_step(e.step_key)), None)
    failure = failure or (failures[0] if failures else None)
    platform = chain_step(failure.step_key) if failure is not None else None
    if failure is not None:
        # The chain's failures name the stage they stopped at; others are named by their step.
        stage = _metadata_text(failure, "stage") or failure.step_key or "run"
        message = _failure_message(failure)
        attempts = _attempts(instance, run.run_id, failure.step_key)
        # A step that asked for another attempt met trouble its retry policy calls transient.
        transient = attempts > 1
    else:
        # No step failed: the run itself did (its worker died or could not start).
        stage, transient = "run", True
        message = failure_event.message or "the run failed before any step failed"
        attempts = int(run.tags.get(RETRY_NUMBER_TAG, "0")) + 1
    return dlq.letter_without_record(
        run_id=run.run_id,
        job_name=run.job_name,
        manifest_id=run.tags.get("factory/manifest_id") or run.tags.get("dagster/partition"),
        platform=run.tags.get("factory/platform") or (platform.name if platform else None),
        pool=run.tags.get("factory/pool") or (platform.pool if platform else None),
        stage=stage,
        message=message,
        transient=transient,
        attempts=attempts,
        log_text=_run_log_tail(instance, run.run_id),
        failed_at=failed_at,
    )


@dg.run_failure_sensor(
    name="dead_letter_sensor",
    # Every code location and in-process runs too (`factory run` executes build jobs in-process,
    # without a code-location origin); `is_build_run` picks the build runs out.
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Writes dlq/<build_id>.json for build runs that failed for good: transient "
    "failures whose retries ran out, or runs that left no record (keyed by run id).",
)
def dead_letter_sensor(
    context: dg.RunFailureSensorContext,
    # The local resource's type, as the assets have it; the S3 one under the same key works too.
    record_store: RecordStore,
) -> None:
    # The run as stored now: the will-retry tag is added after the failure event was written.
    run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    failures = list(context.get_step_failure_events())
    if not is_build_run(run, failures):
        return
    if run.tags.get(WILL_RETRY_TAG) == "true":
        context.log.info(f"run {run.run_id} will be retried; its retry is judged when it ends")
        return
    store = record_store.open()
    letter = dead_letter_for(context.instance, run, context.failure_event, failures, store)
    if letter is None:
        context.log.info(f"run {run.run_id} failed with a recorded result; no dead letter")
    elif dlq.write(store, letter):
        context.log.info(f"dead letter {store.uri('dlq', letter.key)}: {letter.error}")
        alert_dead_letter(letter, store, context.log.warning)
    else:
        context.log.info(f"dead letter {letter.key} was already written")
