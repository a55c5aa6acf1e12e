"""Transient trouble is retried with backoff; a failing test is a result and is not retried."""

import dagster as dg
import pytest

from factory.records.store import LocalRecordStore
from tests.integration.chain_run import materialize_chain
from tests.integration.stores import example_store_copy, manifest, store_with_suite

pytestmark = pytest.mark.integration
QUICK = dg.RetryPolicy(max_retries=2, delay=0.1, backoff=dg.Backoff.EXPONENTIAL)


def run_chain(store, data, registry_address):
    result = materialize_chain(
        store, "retry_me", registry=registry_address, record_store=data, retry_policy=QUICK
    )
    retry = dg.DagsterEventType.STEP_UP_FOR_RETRY
    retries = [e for e in result.all_events if e.event_type == retry]
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
    script = "#!/bin/sh\necho no >&2\nexit 1\n"
    store = store_with_suite(tmp_path, "retry_me", "nope", script, timeout_s=10)
    result, retries, records = run_chain(store, tmp_path / "data", services.registry)
    assert not result.success and retries == []
    [record] = records
    assert record.status == "fail" and not record.error.transient and record.error.attempts == 1
