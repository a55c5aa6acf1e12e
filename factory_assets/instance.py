"""Preparing the Dagster instance at DAGSTER_HOME; keeping its partitions in step with the store."""

import os
from pathlib import Path

import dagster as dg

from factory.errors import FactoryError
from factory.platforms import PLATFORMS
from factory.safe_json import exception_line, printable
from factory.services.dagster_home import write_instance_config
from factory.settings import Settings, SettingsError
from factory.store.load import LoadedStore
from factory_assets.partitions import PARTITIONS
from factory_assets.pools import apply_pool_limits


def prepare_dagster_home(settings: Settings, *, apply_limits: bool = True) -> Path:
    """Create DAGSTER_HOME with the project's dagster.yaml and export it for child processes
    (factory/services/dagster_home.py).

    Also writes the repo's pool limits (`factory.pools`) into the instance, so runs launched from
    the UI, sensors, backfills and the CLI all queue by pool.
    """
    home = write_instance_config(settings.dagster_home)
    if apply_limits:  # readers (`factory status`) leave the limits to the commands that launch
        with open_instance() as instance:
            apply_pool_limits(instance)
    return home


def open_instance() -> dg.DagsterInstance:
    """The instance at DAGSTER_HOME. Whatever keeps Dagster from opening it (a dagster.yaml it
    refuses, a storage it cannot load or reach) is a SettingsError naming that file."""
    try:
        return dg.DagsterInstance.get()
    except FactoryError:
        raise
    except Exception as exc:  # Dagster's, SQLAlchemy's or a driver's: each its own type
        raise unusable_instance(exc) from None


def unusable_instance(exc: BaseException) -> SettingsError:
    """The message for an instance at DAGSTER_HOME that Dagster could not open."""
    home = os.environ.get("DAGSTER_HOME", "")
    return SettingsError(
        f"the Dagster instance at DAGSTER_HOME={printable(home, limit=200)} cannot be opened "
        f"(see its dagster.yaml): {type(exc).__name__}: {exception_line(exc)}"
    )


def partition_requests(
    instance: dg.DagsterInstance, store: LoadedStore
) -> list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest]:
    """The add/delete requests that make each platform's partitions match the store."""
    requests: list = []
    for platform in PLATFORMS:
        definition = PARTITIONS[platform.slug]
        wanted = set(store.partition_keys(platform))
        present = set(instance.get_dynamic_partitions(definition.name))
        if added := sorted(wanted - present):
            requests.append(definition.build_add_request(added))
        if removed := sorted(present - wanted):
            requests.append(definition.build_delete_request(removed))
    return requests


def sync_partitions(instance: dg.DagsterInstance, store: LoadedStore) -> tuple[int, int]:
    """Apply `partition_requests` now; return (added, removed) partition counts.

    Records of removed combinations stay in the record store.
    """
    added = removed = 0
    for request in partition_requests(instance, store):
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
            added += len(request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
            removed += len(request.partition_keys)
    return added, removed
