"""One partition of one platform's chain, materialized in this process on a test Dagster instance.

The engine, registry and S3 tests all run the chain the same way: the partition
added to the platform's dynamic partitions, the four resources the chain needs, and failures left
in the result (`raise_on_error=False`) for the test to read. What differs is passed in: the
platform, the retry policy, the record store (a data dir, or a resource such as S3's), and the
instance when the test reads its event log afterwards.
"""

import contextlib
from pathlib import Path

import dagster as dg

from factory.platforms import BY_NAME, Platform
from factory_assets.partitions import partitions_name
from factory_assets.platform_chain import build_platform_chain
from resources import DockerBuilder, ManifestStore, RecordStore, Registry

AMD64 = BY_NAME["linux/amd64"]


def materialize_chain(
    store_path: Path | str,
    manifest_id: str,
    *,
    registry: str,
    record_store: Path | dg.ConfigurableResource,
    platform: Platform = AMD64,
    retry_policy: dg.RetryPolicy | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize `manifest_id`'s partition of `platform`'s chain and return the result.

    `record_store` is a data dir (the local record store in it) or a record store resource.
    Without `instance`, a throw-away one is used.
    """
    if isinstance(record_store, Path):
        record_store = RecordStore(data_dir=str(record_store))
    with contextlib.ExitStack() as stack:
        if instance is None:
            instance = stack.enter_context(dg.instance_for_test())
        instance.add_dynamic_partitions(partitions_name(platform.slug), [manifest_id])
        return dg.materialize(
            build_platform_chain(platform, retry_policy=retry_policy),
            partition_key=manifest_id,
            instance=instance,
            resources={
                "manifest_store": ManifestStore(path=str(store_path)),
                "docker_builder": DockerBuilder(),
                "registry": Registry(address=registry),
                "record_store": record_store,
            },
            raise_on_error=False,
        )
