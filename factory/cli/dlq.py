"""`factory dlq`: list the dead letters, and requeue one once the trouble behind it is fixed.

Dead letters are written by the daemon's `dead_letter_sensor` (see `factory.records.dlq`).
Requeueing re-runs the letter's combination as `factory run` would, through the Dagster instance
at DAGSTER_HOME, so the new run shows up in the UI beside the failed one; the letter stays (it is
evidence) and is marked requeued, once.
"""

import json
import os
import socket
from typing import TYPE_CHECKING

import click

from factory.cli.common import settings_for, store_option
from factory.errors import FactoryError
from factory.safe_json import printable
from factory.settings import Settings

if TYPE_CHECKING:
    from factory.plan.decisions import PlanItem
    from factory.records import dlq


@click.group(name="dlq")
def dlq_group() -> None:
    """Dead letters: builds that failed for good without a result (`dlq/` in the record store).

    A failing test or a broken Dockerfile is a result and is in the records. A dead letter is a
    build whose transient trouble (engine or registry not answering, push/pull timeouts) outlasted
    its retries, or a run that left no record at all. Fix the cause (`factory services status`),
    then `factory dlq requeue <key>`.
    """


@dlq_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the letters as a JSON list.")
def list_command(as_json: bool) -> None:
    """List dead letters, oldest first, and whether each was requeued.

    An unreadable letter is skipped with a warning on stderr naming its file (exit 0).
    """
    from factory.records import dlq
    from factory.records.selection import open_record_store

    settings = Settings.from_env()
    try:
        found = dlq.entries(open_record_store(settings))
    except FactoryError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in found], indent=2))
        return
    if not found:
        click.echo("no dead letters")
        return
    for entry in found:
        letter = entry.letter
        state = "requeued" if entry.requeued else "waiting"
        # Letter fields are text from a file: shown with control characters escaped.
        click.echo(
            f"{letter.key}  {state:8}  {printable(letter.failed_at[:19])}  "
            f"{printable(letter.manifest_id or '?'):24} {printable(letter.platform or '?'):16} "
            f"{printable(letter.stage, limit=20):7} x{letter.attempts}  "
            f"{printable(letter.error, limit=100)}"
        )
    waiting = sum(1 for e in found if not e.requeued)
    click.echo(
        f"{len(found)} dead letter(s), {waiting} waiting; "
        "re-run one with `factory dlq requeue <key>`"
    )


def _plan_item(settings: Settings, letter: "dlq.DeadLetter") -> "PlanItem":
    """The letter's combination as the plan sees it now (current keys, reasons, priority)."""
    from factory.plan.decisions import RecordIndex, plan_store
    from factory.records.selection import open_record_store
    from factory.services import embedded as services
    from factory.store.load import load_store

    store = load_store(settings.manifest_store)
    manifest = store.model.manifests.get(letter.manifest_id or "")
    if manifest is None or letter.platform not in manifest.platforms:
        msg = (
            f"{printable(letter.manifest_id, limit=80)} on {printable(letter.platform, limit=40)} "
            "is no longer in the manifest store "
            f"{settings.manifest_store}: nothing to requeue"
        )
        raise click.ClickException(msg)
    gpu = services.gpu_runtime_available(services.docker_host(settings))
    records = RecordIndex.from_index(open_record_store(settings).index)
    for force in (False, True):
        _, items = plan_store(
            store,
            records,
            gpu_available=gpu,
            force=force,
            retry_failed=True,  # requeueing a letter is a request to try now
            manifest_ids=[letter.manifest_id],
            platforms=[letter.platform],
        )
        [item] = items
        if "no_executor" in item.reasons:
            msg = (
                f"{letter.manifest_id} on {letter.platform} has no executor here (no NVIDIA "
                "runtime in the Docker Engine): requeue it where the gpu pool runs"
            )
            raise click.ClickException(msg)
        # Someone re-ran it since and it passed: requeueing still means "run it again".
        if item.action == "run":
            return item
    msg = f"no runnable plan item for {letter.manifest_id} on {letter.platform}"
    raise click.ClickException(msg)


@dlq_group.command()
@click.argument("build_id")
@store_option
def requeue(build_id: str, manifest_store: str | None) -> None:
    """Re-run the combination of dead letter BUILD_ID (or run id, for a letter without record).

    Exits 0 when the new run left a record that is a result (pass or fail), 1 when it again
    failed transiently or left no record (the sensor then writes a new dead letter).
    """

    from factory.platforms import platform as lookup_platform
    from factory.records import dlq
    from factory.records.model import utc_now
    from factory.records.selection import open_record_store
    from factory.records.store import RecordWatcher
    from factory.workers.run_pool import run_items
    from factory_assets.instance import open_instance, prepare_dagster_home
    from factory_assets.partitions import PARTITIONS

    settings = settings_for(manifest_store)
    try:
        records = open_record_store(settings)
        letter = dlq.read(records, build_id)
        earlier = dlq.requeued(records, letter.key)
        if earlier is not None:
            when = printable(earlier.get("requeued_at", "?"), limit=40)
            msg = (
                f"dead letter {letter.key} was already requeued at {when}; "
                "a letter is requeued once (its new run is in `factory records` and the UI)"
            )
            raise dlq.AlreadyRequeuedError(msg)
        if not letter.manifest_id or not letter.platform:
            msg = (
                f"dead letter {letter.key} names no manifest x platform "
                f"(run {printable(letter.run_id, limit=80)}); "
                "re-execute that run from the Dagster UI"
            )
            raise click.ClickException(msg)
        item = _plan_item(settings, letter)
        # The run executes in a worker process that loads the code location from the environment.
        os.environ["FACTORY_MANIFEST_STORE"] = str(settings.manifest_store)
        home = prepare_dagster_home(settings)
        partitions = PARTITIONS[lookup_platform(item.platform).slug].name
        with open_instance() as instance:
            if not instance.has_dynamic_partition(partitions, item.manifest_id):
                instance.add_dynamic_partitions(partitions, [item.manifest_id])
        watcher = RecordWatcher(records)
        # Claim the letter before running: of two concurrent requeues only one goes ahead.
        dlq.mark_requeued(
            records,
            letter.key,
            {
                "requeued_at": utc_now(),
                "manifest_id": item.manifest_id,
                "platform": item.platform,
                "reasons": item.reasons,
                "by": f"{socket.gethostname()} pid {os.getpid()}",
            },
        )
    except (FactoryError, KeyError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"requeued {letter.key}: {item.manifest_id} on {item.platform} "
        f"({','.join(item.reasons)}); Dagster instance {home}"
    )
    # The matrix is left to its automation: a requeue is one run of one combination.
    [outcome] = run_items(
        [item],
        parallel=1,
        force_rebuild=False,
        on_start=lambda _: None,
        on_done=lambda *_: None,
    )
    record = watcher.record_of(outcome.run_id)
    if record is None:
        msg = (
            f"run {outcome.run_id} of {item.manifest_id} on {item.platform} left no record: "
            f"{outcome.message}"
        )
        raise click.ClickException(msg)
    detail = f": stage {record.error.stage}: {record.error.message}" if record.error else ""
    click.echo(
        f"{record.status} {item.manifest_id} {item.platform} in {outcome.seconds:.1f}s, record "
        f"{record.build_id} (run {outcome.run_id}){detail}"
    )
    if dlq.needs_dead_letter(record):
        msg = (
            f"{item.manifest_id} on {item.platform} failed transiently again; check "
            "`factory services status` before requeueing its new dead letter"
        )
        raise click.ClickException(msg)
