"""The `factory` command: what is not a Dagster concept (validate, plan, run, services, matrix)."""

import json
import os
import sys
from pathlib import Path

import click

from factory import services as services_module
from factory.errors import FactoryError, StoreError
from factory.settings import Settings, SettingsError

PLATFORM_CHOICE = click.Choice(["linux/amd64", "linux/arm64", "linux/amd64+gpu"])


def _settings(manifest_store: str | None) -> Settings:
    """Settings from the environment, with `--manifest-store` taking precedence."""
    return Settings.from_env(manifest_store=manifest_store)


class _Group(click.Group):
    """Every command: a setting that cannot be used (SettingsError) is a message, not a trace."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None


def _fail(exc: Exception) -> "click.ClickException":
    return click.ClickException(str(exc))


store_option = click.option(
    "--manifest-store",
    type=click.Path(dir_okay=False),
    default=None,
    help="Manifest store JSON (default: $FACTORY_MANIFEST_STORE, else "
    "control_plane/data/manifest.json).",
)
manifest_option = click.option(
    "--manifest-id", "manifest_ids", multiple=True, help="Only this manifest (repeatable)."
)
platform_option = click.option(
    "--platform",
    "platforms",
    multiple=True,
    type=PLATFORM_CHOICE,
    help="Only this platform (repeatable).",
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Factory: build, test and record a manifest store's images on every platform.

    Start the local services with `factory services up`, then `factory run` builds every
    combination that lacks a passing record and prints the compatibility matrix. Open the UI with
    `dagster dev -w workspace.yaml` (DAGSTER_HOME=.factory/dagster).
    """


@main.command()
@store_option
def validate(manifest_store: str | None) -> None:
    """Check the manifest store; list every problem with its file and field path."""
    from factory.store import load_store

    settings = _settings(manifest_store)
    try:
        store = load_store(settings.manifest_store)
    except FactoryError as exc:
        raise _fail(exc) from None
    combos = store.combinations()
    click.echo(
        f"{settings.manifest_store}: valid: {len(store.model.manifests)} manifests, "
        f"{len(combos)} manifest x platform combinations"
    )


def _plan(settings: Settings, *, manifest_ids, platforms, force):
    """The store, the record index and the plan, as `run`, `plan` and `matrix` share them."""
    from factory.planning import plan_store
    from factory.store import load_store
    from factory.stores import open_record_store

    store = load_store(settings.manifest_store)
    for mid in manifest_ids:
        store.manifest(mid)  # a clear error for an unknown id
    gpu = services_module.gpu_runtime_available(services_module.docker_host(settings))
    index, items = plan_store(
        store,
        open_record_store(settings).records(),
        gpu_available=gpu,
        force=force,
        manifest_ids=list(manifest_ids),
        platforms=list(platforms),
    )
    return store, index, items


@main.command(name="plan")
@store_option
@manifest_option
@platform_option
@click.option("--force", is_flag=True, help="Plan to re-run (and rebuild) even up-to-date ones.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of plan items.")
def plan_command(manifest_store, manifest_ids, platforms, force, as_json) -> None:
    """Show what `factory run` would run, why, and whether it needs a new image."""
    settings = _settings(manifest_store)
    try:
        _, _, items = _plan(settings, manifest_ids=manifest_ids, platforms=platforms, force=force)
    except (FactoryError, KeyError) as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in items], indent=2))
        return
    for i in items:
        what = ("rebuild" if i.rebuild else "re-test") if i.action == "run" else "skip"
        click.echo(
            f"{i.action:4}  {what:8}  {i.manifest_id:24} {i.platform:16} "
            f"{','.join(i.reasons):32} {i.build_key[:12]}"
        )
    runs = sum(1 for i in items if i.action == "run")
    click.echo(f"\n{runs} to run, {len(items) - runs} to skip")


@main.command()
@store_option
@click.option("--manifest-id", required=True, help="The manifest to render.")
@click.option("--platform", "platform_name", required=True, type=PLATFORM_CHOICE)
def render(manifest_store, manifest_id, platform_name) -> None:
    """Print the Dockerfile a combination renders to (base pinned to its platform digest)."""
    from factory.keys import build_key, combination_inputs
    from factory.planning import resolve_base_digests
    from factory.platforms import platform
    from factory.render import render_dockerfile
    from factory.store import load_store

    settings = _settings(manifest_store)
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
        raise _fail(exc) from None


@main.command()
@store_option
@manifest_option
@platform_option
@click.option("--force", is_flag=True, help="Re-run and rebuild even combinations that passed.")
@click.option(
    "--parallel",
    type=click.IntRange(1, 32),
    default=2,
    show_default=True,
    help="Combinations built at the same time.",
)
def run(manifest_store, manifest_ids, platforms, force, parallel) -> None:
    """The main job: build, test and record what lacks a passing record; print the matrix.

    Runs go through the Dagster instance at DAGSTER_HOME (default .factory/dagster), so they show up
    in `dagster dev -w workspace.yaml`. Exits 0 when every attempted combination got a record (pass
    or fail), 1 when one could not be recorded.
    """
    import dagster as dg

    from factory.matrix import format_text, matrix_cells
    from factory.publish import publish_plan
    from factory.record_store import RecordWatcher
    from factory.stores import open_record_store
    from factory_assets.instance import prepare_dagster_home, sync_partitions
    from factory_assets.launcher import materialize_matrix, run_items

    settings = _settings(manifest_store)
    # The runs execute in worker processes that load the code location from the environment.
    os.environ["FACTORY_MANIFEST_STORE"] = str(settings.manifest_store)
    try:
        home = prepare_dagster_home(settings)
        store, _, items = _plan(
            settings, manifest_ids=manifest_ids, platforms=platforms, force=force
        )
    except (FactoryError, KeyError) as exc:
        raise _fail(exc) from None
    with dg.DagsterInstance.get() as instance:
        added, removed = sync_partitions(instance, store)
    click.echo(
        f"store {settings.manifest_store}: {len(items)} combinations "
        f"(partitions +{added} -{removed}); Dagster instance {home}"
    )
    todo = [i for i in items if i.action == "run"]
    for i in items:
        if i.action == "skip":
            click.echo(f"  skip     {i.manifest_id} {i.platform}: {','.join(i.reasons)}")
    total = len(todo)
    done = {"n": 0}

    def on_start(item) -> None:
        what = "build" if item.rebuild else "re-test"
        click.echo(
            f"  queued   {item.manifest_id} {item.platform} ({what}: {','.join(item.reasons)})"
        )

    records = open_record_store(settings)
    watcher = RecordWatcher(records)

    def on_done(item, outcome) -> None:
        done["n"] += 1
        record = watcher.record_of(outcome.run_id)
        if record is None:
            click.echo(
                f"[{done['n']}/{total}] NOT RECORDED {item.manifest_id} {item.platform}: "
                f"{outcome.message}",
                err=True,
            )
            return
        if record.error:
            detail = f"stage {record.error.stage}: {record.error.message}"
        else:
            built = (
                f"build {record.timings_s.get('build', 0):.1f}s "
                f"({record.cache.cached}/{record.cache.steps} steps cached)"
                if record.image is None or record.image.rebuilt
                else "image reused (same build key)"
            )
            detail = f"{built}, test {record.timings_s.get('test', 0):.1f}s"
        click.echo(
            f"[{done['n']}/{total}] {record.status:5} {item.manifest_id} {item.platform} "
            f"in {outcome.seconds:.1f}s: {detail} (run {outcome.run_id[:8]})"
        )

    outcomes = []
    if todo:
        outcomes = run_items(
            todo, parallel=parallel, force_rebuild=force, on_start=on_start, on_done=on_done
        )
    else:
        click.echo("nothing to run: every combination has a passing record for its current keys")
    matrix_ok = materialize_matrix()
    if not matrix_ok:
        click.echo(
            "warning: the compatibility_matrix / multiarch_index assets did not materialize; "
            "see the compatibility_matrix_job run in the UI",
            err=True,
        )
    _, index, fresh = _plan(settings, manifest_ids=(), platforms=(), force=False)
    click.echo("")
    click.echo(format_text(matrix_cells(store, index, fresh)))
    click.echo("")
    for decision in publish_plan(store, index, fresh):
        if decision.ready and matrix_ok:
            platforms = ", ".join(oci for _, oci in decision.index_entries())
            click.echo(
                f"published {settings.registry}/factory/{decision.manifest_id}:"
                f"{decision.release_tag} and :latest ({platforms})"
            )
        else:
            click.echo(f"not published {decision.manifest_id}: {'; '.join(decision.reasons)}")
    unrecorded = [o for o in outcomes if watcher.record_of(o.run_id) is None]
    if unrecorded:
        msg = (
            f"{len(unrecorded)} combination(s) could not be recorded; see the messages above and "
            "the runs in `dagster dev -w workspace.yaml`"
        )
        raise click.ClickException(msg)


@main.command()
@store_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "html"]),
    default="text",
    show_default=True,
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
    show_default=True,
    help="Results per cell in the json/html history, newest first.",
)
def matrix(manifest_store, fmt, output, history_n) -> None:
    """Print or write the compatibility matrix (manifest x platform) from the records."""
    from factory.matrix import format_text, matrix_cells
    from factory.planning import RecordIndex
    from factory.report import matrix_html, matrix_json
    from factory.store import load_store
    from factory.stores import open_record_store

    settings = _settings(manifest_store)
    # Checked before the plan (which asks the registry) so a typo fails fast and says so.
    if output and not Path(output).resolve().parent.is_dir():
        msg = (
            f"cannot write {output}: the folder {Path(output).resolve().parent} does not exist; "
            "create it or choose another --output"
        )
        raise click.ClickException(msg)
    try:
        store, _, items = _plan(settings, manifest_ids=(), platforms=(), force=False)
    except StoreError as exc:
        raise _fail(exc) from None
    except FactoryError as exc:
        # Without the registry or the engine the records still tell the statuses; only the
        # "stale" marks (keys changed since the record) need the current plan.
        click.echo(f"note: without the current plan ({exc}); stale cells are not marked", err=True)
        store = load_store(settings.manifest_store)
        items = None
    # One read of the records for the cells and their history, so the two agree.
    record_store = open_record_store(settings)
    records = list(record_store.records())
    index = RecordIndex.from_records(records)
    cells = matrix_cells(store, index, items)
    if fmt == "json":
        report = matrix_json(
            cells, index, history=history_n, records=records, record_store=record_store
        )
        text = json.dumps(report, indent=2) + "\n"
    elif fmt == "html":
        text = matrix_html(
            cells, index, history=history_n, records=records, record_store=record_store
        )
    else:
        text = format_text(cells) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text)
    except OSError as exc:
        msg = f"cannot write {output}: {exc.strerror}; check the path and its permissions"
        raise click.ClickException(msg) from None
    click.echo(f"wrote the matrix ({fmt}, {len(cells)} cells) to {output}")


@main.command()
@manifest_option
@platform_option
@click.option("--json", "as_json", is_flag=True, help="Print the full records as JSON.")
def records(manifest_ids, platforms, as_json) -> None:
    """List compatibility records, newest last."""
    from factory.stores import open_record_store

    settings = Settings.from_env()
    found = [
        r
        for r in open_record_store(settings).records()
        if (not manifest_ids or r.manifest_id in manifest_ids)
        and (not platforms or r.platform in platforms)
    ]
    found.sort(key=lambda r: (r.finished_at, r.build_id))
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in found], indent=2))
        return
    for r in found:
        click.echo(
            f"{r.finished_at}  {r.status:5}  {r.manifest_id:24} {r.platform:16} "
            f"{r.build_id}  {r.image.digest if r.image and r.image.digest else '-'}"
        )
    click.echo(f"{len(found)} records in {settings.data_dir / 'records'}")


@main.command()
@click.argument("build_id")
@click.option("--no-registry", is_flag=True, help="Do not check the image in the registry.")
def verify(build_id, no_registry) -> None:
    """Recheck one record: evidence, SBOM and provenance hashes, subjects, the registry digest."""
    from factory.stores import open_record_store
    from factory.verify import verify_build

    settings = Settings.from_env()
    try:
        report = verify_build(build_id, open_record_store(settings), registry_check=not no_registry)
    except FactoryError as exc:
        raise _fail(exc) from None
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        msg = f"build {build_id} does not verify: {', '.join(c.name for c in report.failed)}"
        raise click.ClickException(msg)


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
        states = services_module.up(settings, echo=click.echo, celery=celery)
    except FactoryError as exc:
        raise _fail(exc) from None
    if not _print_states(states):
        msg = "some services are not ready; see above"
        raise click.ClickException(msg)


@services.command()
def down() -> None:
    """Stop the engine, registry and broker this project started (by PID); data stays."""
    settings = Settings.from_env()
    try:
        _print_states(services_module.down(settings, echo=click.echo))
    except FactoryError as exc:
        raise _fail(exc) from None


@services.command()
def status() -> None:
    """Report each local service."""
    if not _print_states(services_module.status(Settings.from_env())):
        sys.exit(1)


def _register_commands() -> None:
    from factory.cli_dlq import dlq_group
    from factory.cli_gc import gc_command
    from factory.cli_status import status_command
    from factory.cli_worker import worker_command

    main.add_command(status_command)
    main.add_command(worker_command)
    main.add_command(gc_command)
    main.add_command(dlq_group)


_register_commands()

if __name__ == "__main__":
    main()
