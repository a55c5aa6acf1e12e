"""What the `factory` commands share: settings, options, and the plan as `run`, `plan`, `matrix`
and `submit` compute it."""

import click

from factory.errors import FactoryError
from factory.settings import Settings

PLATFORM_CHOICE = click.Choice(["linux/amd64", "linux/arm64", "linux/amd64+gpu"])


def settings_for(manifest_store: str | None) -> Settings:
    """Settings from the environment, with `--manifest-store` taking precedence."""
    return Settings.from_env(manifest_store=manifest_store)


def fail(exc: Exception) -> "click.ClickException":
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
retry_failed_option = click.option(
    "--retry-failed",
    is_flag=True,
    help="Try combinations whose newest record failed now, without waiting for their backoff.",
)


def plan_options(force_help: str):
    """The options that select a plan, in this order: --manifest-store, --manifest-id, --platform,
    --force (`force_help` says what it does for the command) and --retry-failed. The command
    hands them on to `plan_selected`."""
    force_option = click.option("--force", is_flag=True, help=force_help)
    options = (store_option, manifest_option, platform_option, force_option, retry_failed_option)

    def apply(command):
        for option in reversed(options):  # as stacked decorators: the first one listed on top
            command = option(command)
        return command

    return apply


def plan_selected(*, manifest_store, manifest_ids, platforms, force, retry_failed):
    """The settings, store, record index and plan that `plan_options` select; an unknown manifest
    or a store, registry or records problem is the command's error message."""
    settings = settings_for(manifest_store)
    try:
        store, index, items = plan_for(
            settings,
            manifest_ids=manifest_ids,
            platforms=platforms,
            force=force,
            retry_failed=retry_failed,
        )
    except (FactoryError, KeyError) as exc:
        raise fail(exc) from None
    return settings, store, index, items


def plan_for(
    settings: Settings,
    *,
    manifest_ids,
    platforms,
    force,
    retry_failed=False,
    base_digests=None,
    store=None,
    records=None,
):
    """The store, the record index and the plan, as `run`, `plan` and `matrix` share them.

    The record index comes from the records index (as many rows as combinations, not the
    history). A caller that plans again passes what it already has: `base_digests` saves the
    registry lookups, `store` the store's reading and checking, `records` (an opened record
    store) the index's checks.
    """
    from factory.plan.decisions import RecordIndex, plan_store
    from factory.records.selection import open_record_store
    from factory.services import embedded as services_module
    from factory.store.load import load_store

    store = store or load_store(settings.manifest_store)
    for mid in manifest_ids:
        store.manifest(mid)  # a clear error for an unknown id
    gpu = services_module.gpu_runtime_available(services_module.docker_host(settings))
    records = records or open_record_store(settings)
    index, items = plan_store(
        store,
        RecordIndex.from_index(records.index),
        gpu_available=gpu,
        force=force,
        retry_failed=retry_failed,
        manifest_ids=list(manifest_ids),
        platforms=list(platforms),
        base_digests=base_digests,
    )
    return store, index, items
