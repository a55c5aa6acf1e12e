"""Dagster resources: the manifest store, the Docker builder, the registry and the record store."""

from resources.docker_builder import DockerBuilder
from resources.manifest_store import ManifestStore
from resources.record_store import RecordStore
from resources.registry import Registry

__all__ = ["DockerBuilder", "ManifestStore", "RecordStore", "Registry"]
