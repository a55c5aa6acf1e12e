"""A changed input shows exactly the affected partitions stale (what the UI displays)."""

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from factory.platforms import BY_NAME
from factory_assets.inputs import build_inputs_source, inputs_key
from factory_assets.platform_chain import build_platform_chain
from resources import DockerBuilder, ManifestStore, RecordStore, Registry
from tests.integration.stores import example_store_copy, manifest

pytestmark = pytest.mark.integration
AMD64 = BY_NAME["linux/amd64"]


def observe(instance, partition, version):
    instance.report_runless_asset_event(
        dg.AssetObservation(
            asset_key=inputs_key(AMD64),
            partition=partition,
            tags={"dagster/data_version": version},
        )
    )


def test_new_input_version_marks_only_its_partition_stale(services, tmp_path):
    store = example_store_copy(tmp_path, {"fresh_one": manifest(), "other_one": manifest()})
    chain = build_platform_chain(AMD64)
    assets = [build_inputs_source(AMD64), *chain]
    resources = {
        "manifest_store": ManifestStore(path=str(store)),
        "docker_builder": DockerBuilder(),
        "registry": Registry(address=services.registry),
        "record_store": RecordStore(data_dir=str(tmp_path / "data")),
    }
    dockerfile = dg.AssetKey(["linux_amd64", "dockerfile"])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("manifests_linux_amd64", ["fresh_one", "other_one"])
        for partition in ("fresh_one", "other_one"):
            observe(instance, partition, "keys-v1")
            result = dg.materialize(
                chain, partition_key=partition, instance=instance, resources=resources
            )
            assert result.success
        resolver = get_stale_status_resolver(instance, assets)
        assert resolver.get_status(dockerfile, "fresh_one") == StaleStatus.FRESH

        observe(instance, "fresh_one", "keys-v2")
        resolver = get_stale_status_resolver(instance, assets)
        assert resolver.get_status(dockerfile, "fresh_one") == StaleStatus.STALE
        assert resolver.get_status(dockerfile, "other_one") == StaleStatus.FRESH
        causes = resolver.get_stale_causes(dockerfile, "fresh_one")
        assert [c.dependency.asset_key for c in causes] == [inputs_key(AMD64)]
