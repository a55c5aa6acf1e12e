"""Transient trouble is retried with backoff; a failing test is a result and is not retried."""

import dagster as dg
import pytest

from factory.platforms import BY_NAME
from factory.records.store import LocalRecordStore
from factory_assets.platform_chain import build_platform_chain
from resources import DockerBuilder, ManifestStore, RecordStore, Registry
from tests.integration.stores import example_store_copy, manifest

pytestmark = pytest.mark.integration
AMD64 = BY_NAME["linux/amd64"]
QUICK = dg.RetryPolicy(max_retries=2, delay=0.1, backoff=dg.Backoff.EXPONENTIAL)


def run_chain(store, data, registry_address):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("manifests_linux_amd64", ["retry_me"])
        result = dg.materialize(
            build_platform_chain(AMD64, retry_policy=QUICK),
            partition_key="retry_me",
            instance=instance,
            resources={
                "manifest_store": ManifestStore(path=str(store)),
                "docker_builder": DockerBuilder(),
                "registry": Registry(address=registry_address),
                "record_store": RecordStore(data_dir=str(data)),
            },
            raise_on_error=False,
        )
        retries = [
            e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
        ]
    return result, retries, list(LocalRecordStore(data).records())


def test_unreachable_registry_is_retried_then_recorded_once(services, tmp_path):
    store = example_store_copy(tmp_path, {"retry_me": manifest()})
    result, retries, records = run_chain(store, tmp_path / "data", "127.0.0.1:1")
    assert not result.success
    assert len(retries) == 2 and {e.step_key for e in retries} == {"linux_amd64__chain"}
    [record] = records  # one record, for the attempt that finished
    assert record.status == "error" and record.error.stage == "build"
    assert record.error.transient and record.error.attempts == 3
    assert "127.0.0.1:1" in record.error.message


def test_failing_test_is_not_retried(services, tmp_path):
    store = example_store_copy(
        tmp_path,
        {"retry_me": manifest(tests=["nope"])},
        suites={"nope": {"path": "tests/nope.sh", "timeout_s": 10}},
        files={"tests/nope.sh": "#!/bin/sh\necho no >&2\nexit 1\n"},
    )
    result, retries, records = run_chain(store, tmp_path / "data", services.registry)
    assert not result.success and retries == []
    [record] = records
    assert record.status == "fail" and not record.error.transient and record.error.attempts == 1
