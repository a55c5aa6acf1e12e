"""The record format, and the local store's `write_record` under concurrent writers.

What every record store must do (write once, list, latest per combination, refuse escaping ids) is
tests/record_store_contract.py's, run on the local store by test_local_record_store.py.
"""

import json
import threading

import pytest
from pydantic import ValidationError

from factory.errors import RecordExistsError
from factory.records.model import CompatibilityRecord, ImageInfo, new_build_id, parse_record
from factory.records.store import LocalRecordStore


def make_record(**overrides) -> CompatibilityRecord:
    fields = {
        "build_id": new_build_id(),
        "manifest_id": "llm_factory",
        "platform": "linux/arm64",
        "pool": "arm64",
        "status": "pass",
        "build_key": "b" * 64,
        "record_key": "r" * 64,
        "inputs": {"base": {"digest": "sha256:" + "a" * 64}},
        "image": ImageInfo(ref="x/y:z", digest="sha256:" + "c" * 64, size_bytes=1, layers=2),
        "started_at": "2026-11-26T10:00:00.000000Z",
        "finished_at": "2026-11-26T10:01:00.000000Z",
    }
    fields.update(overrides)
    return CompatibilityRecord(**fields)


def test_record_round_trips_with_every_contract_field(tmp_path):
    store = LocalRecordStore(tmp_path)
    record = make_record()
    uri = store.write_record(record)
    assert uri.startswith("file://") and uri.endswith(f"records/{record.build_id}.json")
    data = json.loads((tmp_path / "records" / f"{record.build_id}.json").read_text())
    for key in (
        "record_version",
        "build_id",
        "manifest_id",
        "platform",
        "pool",
        "status",
        "build_key",
        "record_key",
        "inputs",
        "image",
        "tests",
        "cache",
        "timings_s",
        "evidence",
        "error",
        "started_at",
        "finished_at",
        "dagster",
    ):
        assert key in data, key
    assert data["record_version"] == 1
    assert parse_record(data) == record


@pytest.mark.parametrize("bad", [{"status": "passed"}, {"record_version": 2}, {"extra": 1}])
def test_record_rejects_bad_fields(bad):
    data = make_record().model_dump(mode="json") | bad
    with pytest.raises(ValidationError):
        parse_record(data)


def test_concurrent_writers_of_one_build_id_leave_one_complete_record(tmp_path):
    store = LocalRecordStore(tmp_path)
    record = make_record()
    results = []

    def write(status):
        try:
            store.write_record(record.model_copy(update={"status": status}))
            results.append("ok")
        except RecordExistsError:
            results.append("refused")

    threads = [
        threading.Thread(target=write, args=("pass" if i % 2 else "fail",)) for i in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1 and results.count("refused") == 19
    assert len(list(store.records())) == 1
