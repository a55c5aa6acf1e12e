"""The engine and stack-cache parts of `factory gc` (`--engine`; stack refs no manifest uses)."""

import json

import click

from factory.errors import FactoryError
from factory.settings import Settings


def add_stack_gc(plan, settings: Settings, client) -> None:
    """Add unused stack cache refs to a registry gc plan; an unloadable store only warns."""
    from factory.build.stack_gc import plan_stack_gc
    from factory.store.load import load_store

    try:
        store = load_store(settings.manifest_store)
    except FactoryError as exc:
        first = str(exc).splitlines()[0]
        plan.warnings.append(f"stack cache refs left alone: the manifest store: {first}")
        return
    plan_stack_gc(plan, store, client)


def engine_gc(settings: Settings, *, keep: int, dry_run: bool, as_json: bool) -> None:
    """`factory gc --engine [--dry-run]`: list, then (unless a dry run) remove and report."""
    from factory.build.engine import Engine
    from factory.build.engine_prune import apply_engine_prune, plan_engine_prune
    from factory.services.embedded import docker_host

    try:
        engine = Engine(docker_host(settings))
        plan = plan_engine_prune(engine, keep=keep, registry=settings.registry)
        result = None if dry_run else apply_engine_prune(engine, plan)
    except FactoryError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        outcome = None
        if result is not None:
            outcome = {
                "removed": result.removed,
                "failed": result.failed,
                "image_bytes_freed": result.image_bytes_freed,
                "cache_bytes_reclaimed": result.cache_bytes_reclaimed,
            }
        click.echo(json.dumps({"dry_run": dry_run, "plan": plan.as_dict(), "result": outcome}))
    else:
        if dry_run:
            click.echo(f"dry run: nothing is removed from the engine at {engine.docker_host}")
        for line in plan.lines():
            click.echo(line)
        if result is None:
            click.echo(
                f"dry run: would remove {len(plan.removals)} image tags (about "
                f"{plan.image_bytes} bytes) and prune the build cache to "
                f"{plan.cache_limit_bytes} bytes"
            )
        else:
            click.echo(
                f"removed {len(result.removed)} image tags: {result.image_bytes_freed} bytes of "
                f"layers freed; build cache: {result.cache_bytes_reclaimed} bytes reclaimed"
            )
    if result is not None and result.failed:
        msg = "some removals failed: " + "; ".join(result.failed)
        raise click.ClickException(msg)
