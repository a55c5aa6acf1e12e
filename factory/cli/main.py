"""The `factory` command: what is not a Dagster concept (validate, plan, run, services, matrix)."""

import json
import sys
from pathlib import Path

import click

from factory.cli.common import (
    PLATFORM_CHOICE,
    fail,
    manifest_option,
    plan_for,
    plan_options,
    plan_selected,
    platform_option,
    settings_for,
    store_option,
)
from factory.errors import FactoryError, StoreError
from factory.settings import Settings, SettingsError


class _Group(click.Group):
    """Every command: a setting that cannot be used (SettingsError) is a message, not a trace."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None


# Every command's --help shows its options' defaults (click leaves out flags that are off and
# options without a default).
@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
def main() -> None:
    """Factory: build, test and record a manifest store's images on every platform.

    Start the local services with `factory services up`, then `factory run` builds every
    combination that lacks a passing record and prints the compatibility matrix. Open the UI with
    `dagster dev -w workspace.yaml` (DAGSTER_HOME=.factory/dagster).
    """
    from factory.store.check_cache import enable_writes

    enable_writes()  # the next command reads what this one checked


@main.command()
@store_option
def validate(manifest_store: str | None) -> None:
    """Check the manifest store; list every problem with its file and field path."""
    from factory.store.load import load_store

    settings = settings_for(manifest_store)
    try:
        store = load_store(settings.manifest_store)
    except FactoryError as exc:
        raise fail(exc) from None
    combos = store.combinations()
    click.echo(
        f"{settings.manifest_store}: valid: {len(store.model.manifests)} manifests, "
        f"{len(combos)} manifest x platform combinations"
    )


@main.command(name="plan")
@plan_options(force_help="Plan to re-run (and rebuild) even up-to-date ones.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of plan items.")
def plan_command(as_json, **selection) -> None:
    """Show what `factory run` would run, why, and whether it needs a new image.

    A combination whose newest record failed for its current keys waits out a backoff
    (`failed_backoff`, with the time of the next attempt): 1 h after the first failure, doubling
    up to 32 h (FACTORY_FAILED_BACKOFF_S, FACTORY_FAILED_BACKOFF_MAX_S).
    """
    _, _, _, items = plan_selected(**selection)
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in items], indent=2))
        return
    for i in items:
        what = ("rebuild" if i.rebuild else "re-test") if i.action == "run" else "skip"
        reasons = ",".join(i.reasons)
        if "failed_backoff" in i.reasons:
            reasons += f" (next {i.retry_at}, {i.failures} failed)"
        click.echo(
            f"{i.action:4}  {what:8}  {i.manifest_id:24} {i.platform:16} "
            f"{reasons:32} {i.build_key[:12]}"
        )
    runs = sum(1 for i in items if i.action == "run")
    click.echo(f"\n{runs} to run, {len(items) - runs} to skip")


@main.command()
@store_option
@click.option("--manifest-id", required=True, help="The manifest to render.")
@click.option("--platform", "platform_name", required=True, type=PLATFORM_CHOICE)
def render(manifest_store, manifest_id, platform_name) -> None:
    """Print the Dockerfile a combination renders to (base pinned to its platform digest)."""
    from factory.plan.decisions import resolve_base_digests
    from factory.platforms import platform
    from factory.store.keys import build_key, combination_inputs
    from factory.store.load import load_store
    from factory.store.render import render_dockerfile

    settings = settings_for(manifest_store)
    try:
        store = load_store(settings.manifest_store)
        target = platform(platform_name)
        manifest = store.manifest(manifest_id)
        if platform_name not in manifest.platforms:
            msg = f"manifest {manifest_id!r} does not list {platform_name} ({manifest.platforms})"
            raise FactoryError(msg)
        digests = resolve_base_digests(store, [(manifest_id, target)])
        inputs = combination_inputs(
            store, manifest_id, target, digests[(manifest.base, target.oci_platform)]
        )
        click.echo(render_dockerfile(store, inputs, build_key(inputs)).text, nl=False)
    except (FactoryError, KeyError) as exc:
        raise fail(exc) from None


@main.command()
@store_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "html"]),
    default="text",
    help="text: a table; json: cells with links and history; html: a self-contained page.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to this file instead of standard output (its folder must exist).",
)
@click.option(
    "--history",
    "history_n",
    type=click.IntRange(0, 100),
    default=5,
    help="Results per cell in the json/html history, newest first.",
)
def matrix(manifest_store, fmt, output, history_n) -> None:
    """Print or write the compatibility matrix (manifest x platform) from the records."""
    from factory.plan.decisions import RecordIndex
    from factory.records.selection import open_record_store
    from factory.report.matrix import format_text, matrix_cells
    from factory.report.matrix_report import matrix_json, render_html
    from factory.store.load import load_store

    settings = settings_for(manifest_store)
    # Checked before the plan (which asks the registry) so a typo fails fast and says so.
    if output and not Path(output).resolve().parent.is_dir():
        msg = (
            f"cannot write {output}: the folder {Path(output).resolve().parent} does not exist; "
            "create it or choose another --output"
        )
        raise click.ClickException(msg)
    record_store = open_record_store(settings)
    try:
        store, index, items = plan_for(settings, manifest_ids=(), platforms=(), force=False)
    except StoreError as exc:
        raise fail(exc) from None
    except FactoryError as exc:
        # Without the registry or the engine the records still tell the statuses; only the
        # "stale" marks (keys changed since the record) need the current plan.
        click.echo(f"note: without the current plan ({exc}); stale cells are not marked", err=True)
        try:
            store = load_store(settings.manifest_store)
            index = RecordIndex.from_index(record_store.index)
        except FactoryError as again:
            raise fail(again) from None
        items = None
    cells = matrix_cells(store, index, items)
    # The history needs the last few records per combination, not the whole record history.
    records = None
    if fmt != "text":
        try:
            records = record_store.index.select(newest_per_combination=max(history_n, 1))
        except FactoryError as exc:
            raise fail(exc) from None
    if fmt == "text":
        text = format_text(cells) + "\n"
    else:
        report = matrix_json(
            cells, index, history=history_n, records=records, record_store=record_store
        )
        text = json.dumps(report, indent=2) + "\n" if fmt == "json" else render_html(report)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text)
    except OSError as exc:
        msg = f"cannot write {output}: {exc.strerror}; check the path and its permissions"
        raise click.ClickException(msg) from None
    click.echo(f"wrote the matrix ({fmt}, {len(cells)} cells) to {output}")


@main.group(invoke_without_command=True)
@manifest_option
@platform_option
@click.option("--json", "as_json", is_flag=True, help="Print the full records as JSON.")
@click.pass_context
def records(ctx, manifest_ids, platforms, as_json) -> None:
    """List compatibility records, newest last; `reindex` and `check` keep the records index.

    The records index (SQLite under the data dir, or FACTORY_RECORDS_INDEX_URL, or the Dagster
    PostgreSQL database) answers every listing; the record files stay the source of truth.
    """
    if ctx.invoked_subcommand is not None:
        return
    from factory.records.selection import open_record_store

    settings = Settings.from_env()
    try:
        found = open_record_store(settings).index.select(
            manifest_ids=manifest_ids, platforms=platforms
        )
    except FactoryError as exc:
        raise fail(exc) from None
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in found], indent=2))
        return
    for r in found:
        quarantine = r.quarantine.ref if r.quarantine and r.quarantine.ref else ""
        click.echo(
            f"{r.finished_at}  {r.status:5}  {r.manifest_id:24} {r.platform:16} "
            f"{r.build_id}  {r.image.digest if r.image and r.image.digest else '-'}"
            + (f"  quarantine {quarantine}" if quarantine else "")
        )
    click.echo(f"{len(found)} records in {settings.data_dir / 'records'}")


@records.command(name="reindex")
def records_reindex() -> None:
    """Rebuild the records index from a full listing of the records (safe while builds run)."""
    import time

    from factory.records.selection import open_record_store

    store = open_record_store(Settings.from_env())
    started = time.monotonic()
    click.echo(f"reindexing {store.location('record')} into {store.index.shown_url}")
    try:
        counts = store.index.reindex(echo=click.echo)
    except FactoryError as exc:
        raise fail(exc) from None
    skipped = f", {counts['skipped']} unreadable skipped" if counts["skipped"] else ""
    click.echo(f"indexed {counts['records']} records{skipped} in {time.monotonic() - started:.1f}s")


@records.command(name="check")
def records_check() -> None:
    """Compare the records index with the records; exit 1 when they differ."""
    from factory.records.selection import open_record_store

    store = open_record_store(Settings.from_env())
    try:
        report = store.index.check()
    except FactoryError as exc:
        raise fail(exc) from None
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        msg = "the records index does not match the records: run `factory records reindex`"
        raise click.ClickException(msg)


@main.command()
@click.argument("build_id", required=False)
@click.option("--no-registry", is_flag=True, help="Do not check the image in the registry.")
@click.option(
    "--image",
    help="Verify REGISTRY/REPOSITORY@sha256:... from the registry alone (needs --key).",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False),
    help="Public key (FILE.pub of `factory keys generate`) the attestations must be signed with.",
)
def verify(build_id, no_registry, image, key) -> None:
    """Recheck a record (BUILD_ID: evidence, SBOM and provenance hashes, subjects, the registry
    digest, its attestations) or an image's signed attestations (--image REF@DIGEST --key PUB)."""
    from factory.cli.keys import run_verify

    run_verify(build_id, no_registry, image, key)


@main.group()
def services() -> None:
    """Start, stop or inspect the local Docker Engine, registry, qemu and base images."""


def _print_states(states) -> bool:
    ok = True
    for s in states:
        ok &= s.ok
        click.echo(f"  {'ok ' if s.ok else 'BAD'}  {s.name:10} {s.detail}")
    return ok


@services.command()
@click.option(
    "--celery",
    is_flag=True,
    help="Also the Celery broker for `factory worker` (Debian's redis-server on "
    "FACTORY_CELERY_BROKER, default redis://127.0.0.1:6379/0).",
)
def up(celery: bool) -> None:
    """Install (apt) and start what is missing; idempotent."""
    settings = Settings.from_env()
    try:
        from factory.services import embedded as services_module

        states = services_module.up(settings, echo=click.echo, celery=celery)
    except FactoryError as exc:
        raise fail(exc) from None
    if not _print_states(states):
        msg = "some services are not ready; see above"
        raise click.ClickException(msg)


@services.command()
def down() -> None:
    """Stop the engine, registry and broker this project started (by PID); data stays."""
    settings = Settings.from_env()
    try:
        from factory.services import embedded as services_module

        _print_states(services_module.down(settings, echo=click.echo))
    except FactoryError as exc:
        raise fail(exc) from None


@services.command()
def status() -> None:
    """Report each local service."""
    from factory.services import embedded as services_module

    if not _print_states(services_module.status(Settings.from_env())):
        sys.exit(1)


def _register_commands() -> None:
    from factory.cli.dlq import dlq_group
    from factory.cli.gc import gc_command
    from factory.cli.keys import keys_group
    from factory.cli.run import run_command
    from factory.cli.status import status_command
    from factory.cli.submit import submit_command
    from factory.cli.worker import worker_command

    main.add_command(run_command)
    main.add_command(status_command)
    main.add_command(submit_command)
    main.add_command(worker_command)
    main.add_command(gc_command)
    main.add_command(dlq_group)
    main.add_command(keys_group)


_register_commands()

if __name__ == "__main__":
    main()
