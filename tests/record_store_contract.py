"""What every record store promises, written once and run against each implementation.

A subclass names its implementation by overriding the `store` fixture and two hooks: the URI
prefix its entries live under, and the raw entry names in one folder (files, or object keys).
The local folders run it in tests/unit/records/test_local_record_store.py, S3 (a moto server) in
tests/integration/s3/test_s3_record_store.py, so both stores are held to the same behaviour.
"""

import hashlib
import threading

import pytest

from factory.errors import RecordExistsError
from factory.records.model import new_build_id
from factory.records.store import LAYOUT, RecordStore, json_bytes
from tests.unit.records.test_records import make_record

WRITERS = 20


class RecordStoreContract:
    """The behaviour checks; a subclass supplies the store."""

    @pytest.fixture
    def store(self) -> RecordStore:
        raise NotImplementedError

    def uri_prefix(self, store: RecordStore) -> str:
        """Where the store's tree starts, e.g. `file:///.../data/` or `s3://bucket/prefix/`."""
        raise NotImplementedError

    def names_in(self, store: RecordStore, folder: str) -> list[str]:
        """Every entry in one folder as the medium holds it, temp files and strays included."""
        raise NotImplementedError

    def test_record_round_trips(self, store):
        record = make_record()
        uri = store.write_record(record)
        assert uri == f"{self.uri_prefix(store)}records/{record.build_id}.json"
        assert store.get("record", record.build_id) == json_bytes(record.model_dump(mode="json"))
        assert list(store.records()) == [record]
        assert store.get("record", new_build_id()) is None

    def test_every_kind_has_its_layout_name_and_uri(self, store):
        build_id = new_build_id()
        for kind, (folder, pattern) in LAYOUT.items():
            data = f"{kind} of {build_id}\n".encode()
            uri, sha256 = store.put(kind, build_id, data)
            expected = f"{self.uri_prefix(store)}{folder}/{pattern.format(build_id=build_id)}"
            assert (uri, store.uri(kind, build_id)) == (expected, expected)
            assert sha256 == hashlib.sha256(data).hexdigest()
            assert store.get(kind, build_id) == data

    def test_second_write_is_refused_and_the_first_stays(self, store):
        first = make_record()
        store.write_record(first)
        before = store.get("record", first.build_id)
        with pytest.raises(RecordExistsError, match="written once"):
            store.write_record(first.model_copy(update={"status": "fail"}))
        assert store.get("record", first.build_id) == before
        assert [r.status for r in store.records()] == ["pass"]
        assert self.names_in(store, "records") == [f"{first.build_id}.json"]

    def test_concurrent_writers_of_one_build_id_leave_one_complete_record(self, store):
        record = make_record()
        # Each writer's bytes differ, so the stored object names the one writer that won.
        payloads = [
            json_bytes(
                record.model_copy(
                    update={"finished_at": f"2026-11-26T10:01:{i:02d}.000000Z"}
                ).model_dump(mode="json")
            )
            for i in range(WRITERS)
        ]
        barrier = threading.Barrier(WRITERS)
        outcomes: dict[int, str] = {}

        def write(i: int) -> None:
            barrier.wait()
            try:
                store.put("record", record.build_id, payloads[i])
                outcomes[i] = "ok"
            except RecordExistsError:
                outcomes[i] = "refused"

        threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [i for i, outcome in outcomes.items() if outcome == "ok"]
        assert len(outcomes) == WRITERS and len(winners) == 1, outcomes
        assert self.names_in(store, "records") == [f"{record.build_id}.json"]
        assert store.get("record", record.build_id) == payloads[winners[0]]
        assert len(list(store.records())) == 1

    def test_list_ids_per_kind(self, store):
        ids = sorted(new_build_id() for _ in range(3))
        for build_id in reversed(ids):
            store.write_record(make_record(build_id=build_id))
        store.put_json("error", ids[1], {"stage": "build"})
        store.put("evidence", ids[2], b"log\n")
        assert store.list_ids("record") == ids
        assert store.list_ids("error") == [ids[1]]
        assert store.list_ids("evidence") == [ids[2]]
        assert store.list_ids("dlq") == []

    def test_latest_by_combination(self, store):
        old = make_record(finished_at="2026-11-26T09:00:00.000000Z", status="fail")
        new = make_record(finished_at="2026-11-26T11:00:00.000000Z")
        other = make_record(platform="linux/amd64", pool="amd64")
        for record in (new, old, other):
            store.write_record(record)
        latest = store.latest_by_combination()
        assert latest[("llm_factory", "linux/arm64")].build_id == new.build_id
        assert latest[("llm_factory", "linux/amd64")].build_id == other.build_id

    @pytest.mark.parametrize("build_id", ["", "../x", "a/b", ".hidden"])
    def test_ids_that_would_escape_their_folder_are_refused(self, store, build_id):
        with pytest.raises(ValueError, match="invalid build_id"):
            store.put("record", build_id, b"{}")
