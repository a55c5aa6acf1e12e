"""Preparing the Dagster instance at DAGSTER_HOME and keeping its partitions in step with the store."""

import os
import shutil
from pathlib import Path

import dagster as dg

from factory.platforms import PLATFORMS
from factory.settings import PROJECT_ROOT, Settings
from factory.store import LoadedStore
from factory_assets.partitions import partitions_name

INSTANCE_CONFIG = PROJECT_ROOT / "dagster.yaml"


def prepare_dagster_home(settings: Settings) -> Path:
    """Create DAGSTER_HOME with the project's dagster.yaml and export it for child processes."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists() or target.read_bytes() != INSTANCE_CONFIG.read_bytes():
        shutil.copyfile(INSTANCE_CONFIG, target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def sync_partitions(instance: dg.DagsterInstance, store: LoadedStore) -> dict[str, tuple[int, int]]:
    """Add and remove each platform's dynamic partitions to match the store.

    Returns slug -> (added, removed). Records of removed combinations stay in the record store.
    """
    changes = {}
    for platform in PLATFORMS:
        name = partitions_name(platform.slug)
        wanted = set(store.partition_keys(platform))
        present = set(instance.get_dynamic_partitions(name))
        added = sorted(wanted - present)
        removed = sorted(present - wanted)
        if added:
            instance.add_dynamic_partitions(name, added)
        for key in removed:
            instance.delete_dynamic_partition(name, key)
        changes[platform.slug] = (len(added), len(removed))
    return changes
