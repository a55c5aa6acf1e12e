"""`factory gc`: keep the newest image tags per combination and recent evidence; records stay."""

import json
from dataclasses import asdict

import click

from factory.errors import FactoryError
from factory.records.retention_defaults import DEFAULT_EVIDENCE_DAYS, DEFAULT_KEEP
from factory.settings import Settings


@click.command(name="gc")
@click.option("--dry-run", is_flag=True, help="Print what would be removed; remove nothing.")
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=DEFAULT_KEEP,
    help="Image tags to keep per manifest x platform.",
)
@click.option(
    "--evidence-days",
    type=click.IntRange(min=0),
    default=DEFAULT_EVIDENCE_DAYS,
    help="Keep evidence, SBOMs and provenance this many days (releases always).",
)
@click.option(
    "--collect/--no-collect",
    default=True,
    help="Run the registry's garbage-collect afterwards, when that is safe.",
)
@click.option(
    "--collect-only",
    is_flag=True,
    help="Only run garbage-collect on the local registry's storage (stop the registry first).",
)
@click.option(
    "--engine",
    "engine_only",
    is_flag=True,
    help="Prune the Docker Engine instead: build images beyond the newest KEEP per "
    "manifest x platform, and build cache beyond FACTORY_ENGINE_CACHE_GB (default 10).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan and the outcome as JSON.")
def gc_command(
    dry_run: bool,
    keep: int,
    evidence_days: int,
    collect: bool,
    collect_only: bool,
    engine_only: bool,
    as_json: bool,
) -> None:
    """Delete old image tags from the registry and old evidence files; records are kept.

    Per manifest x platform the newest KEEP image tags stay, and so does every image that a
    release/latest index, another tag or a combination's newest record points at. Evidence,
    SBOM and provenance files older than EVIDENCE_DAYS go unless their image was released.
    Deleted images free disk space once the registry's garbage-collect runs, which is only safe
    with the registry stopped: `factory gc` says when to run `factory gc --collect-only`.
    The newest KEEP quarantined tags per combination stay too, and stack cache refs that no
    manifest of the store uses any more go. With --engine, the Docker Engine is pruned instead
    (images of containers are never removed).
    """
    from factory.cli.engine_gc import add_stack_gc
    from factory.records.gc_apply import apply_gc, collect_garbage, local_registry_config
    from factory.records.gc_source import IndexedRecords
    from factory.records.retention import plan_gc
    from factory.records.selection import open_record_store
    from factory.registry.client import RegistryClient

    settings = Settings.from_env()
    if engine_only:
        from factory.cli.engine_gc import engine_gc

        engine_gc(settings, keep=keep, dry_run=dry_run, as_json=as_json)
        return
    try:
        config = local_registry_config(settings.data_dir, settings.registry)
        if collect_only:
            if config is None:
                msg = (
                    f"no config of a registry serving {settings.registry} under "
                    f"{settings.data_dir / 'registry'}: run that registry's own garbage collection"
                )
                raise click.ClickException(msg)
            outcome = collect_garbage(config, dry_run=dry_run)
            if not outcome.ran:
                raise click.ClickException(outcome.detail)
            click.echo(json.dumps(asdict(outcome), indent=2) if as_json else outcome.detail)
            return
        client = RegistryClient(settings.registry)
        index = open_record_store(settings).index
        plan = plan_gc(
            IndexedRecords(index),
            client,
            keep=keep,
            evidence_days=evidence_days,
            data_dir=settings.data_dir,
        )
        add_stack_gc(plan, settings, client)
        result = None
        if not dry_run:
            result = apply_gc(
                plan,
                client,
                settings.data_dir,
                registry_config=config if collect else None,
                records_index=index,
            )
    except FactoryError as exc:
        raise click.ClickException(str(exc)) from None

    if as_json:
        click.echo(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "plan": plan.as_dict(),
                    "result": result.summary() if result else None,
                    "collect": asdict(result.collect) if result and result.collect else None,
                },
                indent=2,
            )
        )
        return
    if dry_run:
        click.echo("dry run: nothing is removed")
    for line in plan.lines():
        click.echo(line)
    counts = plan.summary()
    what = (
        f"{counts['manifests']} image manifests ({counts['tags']} tags) and "
        f"{counts['files']} evidence files"
    )
    if result is None:
        click.echo(f"dry run: would remove {what}; {counts['kept_beyond_keep']} older tags kept")
        return
    click.echo(f"removed {what} ({result.bytes_removed} bytes of files)")
    if result.collect is not None:
        click.echo(result.collect.detail)
    elif not collect:
        click.echo("garbage-collect not run (--no-collect): registry blobs stay on disk")
    else:
        click.echo(
            f"garbage-collect not run: {settings.registry} is not a registry factory started; "
            "its blobs are freed by its own garbage collection"
        )
