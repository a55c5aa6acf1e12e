"""The record format and the write-once record store."""

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


def test_second_write_for_a_build_id_is_refused_and_the_first_stays(tmp_path):
    store = LocalRecordStore(tmp_path)
    first = make_record()
    store.write_record(first)
    with pytest.raises(RecordExistsError):
        store.write_record(first.model_copy(update={"status": "fail"}))
    assert next(store.records()).status == "pass"
    assert not [p for p in (tmp_path / "records").iterdir() if p.name.startswith(".tmp")]


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


def test_latest_by_combination(tmp_path):
    store = LocalRecordStore(tmp_path)
    old = make_record(finished_at="2026-11-26T09:00:00.000000Z", status="fail")
    new = make_record(finished_at="2026-11-26T11:00:00.000000Z")
    other = make_record(platform="linux/amd64", pool="amd64")
    for r in (new, old, other):
        store.write_record(r)
    latest = store.latest_by_combination()
    assert latest[("llm_factory", "linux/arm64")].build_id == new.build_id
    assert latest[("llm_factory", "linux/amd64")].build_id == other.build_id


@pytest.mark.parametrize("build_id", ["", "../x", "a/b", ".hidden"])
def test_store_refuses_ids_that_would_escape(tmp_path, build_id):
    with pytest.raises(ValueError, match="invalid build_id"):
        LocalRecordStore(tmp_path).put("record", build_id, b"{}")
