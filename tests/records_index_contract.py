"""What the records index promises, run against SQLite (tests/unit/records/test_records_index.py)
and a
real PostgreSQL server (tests/integration/postgres/test_records_index_postgres.py).

A subclass supplies `index_url(tmp_path)`; the record store is always the local folders, so the
records themselves are the same in both.
"""

import threading

import pytest

from factory.records.index import RecordsIndex, open_index
from factory.records.store import LocalRecordStore
from tests.unit.records.test_records import make_record

KEY = "%064x"


def record_at(n: int, *, manifest: str = "m1", platform: str = "linux/amd64", **changes):
    """Record number n: later n finish later; build and record keys follow n unless given."""
    fields = {
        "manifest_id": manifest,
        "platform": platform,
        "pool": "amd64" if platform == "linux/amd64" else "arm64",
        "build_key": KEY % (n + 1),
        "record_key": KEY % (n + 1000),
        "finished_at": f"2026-11-{1 + n // 1440:02d}T{(n // 60) % 24:02d}:{n % 60:02d}:00.000000Z",
    }
    fields.update(changes)
    return make_record(**fields)


def rows(index: RecordsIndex) -> tuple[list, dict]:
    """Everything a reader sees: every record (oldest first) and the newest per combination."""
    return (
        [r.model_dump(mode="json") for r in index.select()],
        {k: r.build_id for k, r in index.latest().items()},
    )


class RecordsIndexContract:
    def index_url(self, tmp_path) -> str:
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path, monkeypatch):
        monkeypatch.setenv("FACTORY_RECORDS_INDEX_URL", self.index_url(tmp_path))
        store = LocalRecordStore(tmp_path / "data")
        open_index(store, tmp_path / "data").ensure_current(echo=lambda _: None)
        return store

    def fresh(self, store) -> RecordsIndex:
        """Another reader of the same index, as another process would open it."""
        return RecordsIndex(store.index.url, store)

    def test_written_records_are_indexed_and_newest_wins(self, store):
        for n, status in enumerate(["pass", "fail", "pass"]):
            store.write_record(record_at(n, status=status))
        other = store.write_record(record_at(1, platform="linux/arm64"))
        assert other
        index = self.fresh(store)
        latest = index.latest()
        assert latest[("m1", "linux/amd64")].finished_at.endswith("00:02:00.000000Z")
        assert latest[("m1", "linux/arm64")].platform == "linux/arm64"
        assert len(index.select()) == 4
        assert index.built_keys([KEY % 1, KEY % 99]) == {KEY % 1}
        assert index.check().ok

    def test_reindex_rebuilds_the_same_index(self, store):
        for n in range(30):
            store.write_record(record_at(n, manifest=f"m{n % 4}", status=("pass", "fail")[n % 2]))
        before = rows(self.fresh(store))
        index = self.fresh(store)
        counts = index.reindex()
        assert counts == {"records": 30, "skipped": 0}
        assert rows(self.fresh(store)) == before
        assert index.check().ok

    def test_a_missing_index_is_built_with_a_message(self, store, tmp_path):
        for n in range(3):
            store.write_record(record_at(n))
        self.drop(store)
        messages = []
        index = self.fresh(store)
        index.ensure_current(echo=messages.append)
        assert len(messages) == 1 and "3 records indexed" in messages[0], messages
        assert len(index.select()) == 3

    def drop(self, store) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(store.index.url)
        with engine.begin() as conn:
            for table in (
                "factory_records",
                "factory_records_latest",
                "factory_records_pending",
                "factory_records_meta",
            ):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()

    def test_a_record_whose_writer_stopped_before_indexing_is_found(self, store):
        store.write_record(record_at(0))
        lost = record_at(1, status="fail")
        # The writer's first two steps, then it dies: a pending row and the record file.
        store.index.begin(lost.build_id)
        store.put_json("record", lost.build_id, lost.model_dump(mode="json"))
        messages = []
        index = self.fresh(store)
        index.ensure_current(echo=messages.append)
        assert any("writer stopped" in m for m in messages), messages
        assert index.latest()[("m1", "linux/amd64")].build_id == lost.build_id
        assert index.check().ok

    def test_records_written_behind_its_back_are_detected(self, store):
        store.write_record(record_at(0))
        foreign = record_at(1)
        # An older Factory (or a copy) writes the file alone: no pending row, no index row.
        LocalRecordStore(store.root).put_json(
            "record", foreign.build_id, foreign.model_dump(mode="json")
        )
        messages = []
        index = self.fresh(store)
        index.ensure_current(echo=messages.append)
        assert any("indexed 1 new" in m for m in messages), messages
        assert index.latest()[("m1", "linux/amd64")].build_id == foreign.build_id

    def test_check_names_what_differs(self, store):
        kept = [record_at(n) for n in range(3)]
        for record in kept:
            store.write_record(record)
        foreign = record_at(5)
        LocalRecordStore(store.root).put_json(
            "record", foreign.build_id, foreign.model_dump(mode="json")
        )
        report = self.fresh(store).check()
        assert report.missing == [foreign.build_id] and not report.ok
        assert "1 not in the index" in "\n".join(report.lines())

    def test_a_record_written_while_indexing_is_not_lost(self, store):
        for n in range(300):
            store.write_record(record_at(n, manifest=f"m{n % 7}"))
        written = []
        stop = threading.Event()

        def writer():
            writer_store = LocalRecordStore(store.root)
            open_index(writer_store, store.root)
            n = 1000
            while not stop.is_set() and n < 1200:
                record = record_at(n, manifest="late")
                writer_store.write_record(record)
                written.append(record.build_id)
                n += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            for _ in range(3):
                self.fresh(store).reindex()
        finally:
            stop.set()
            thread.join()
        assert written, "the writer wrote nothing while the index was rebuilt"
        index = self.fresh(store)
        indexed = {r.build_id for r in index.select(manifest_ids=["late"])}
        assert set(written) <= indexed
        assert index.check().ok

    def test_history_and_windows(self, store):
        for n in range(12):
            store.write_record(record_at(n))
        index = self.fresh(store)
        last3 = index.select(newest_per_combination=3)
        assert [r.finished_at[11:16] for r in last3] == ["00:09", "00:10", "00:11"]
        recent = index.select(finished_after="2026-11-01T00:10:00.000000Z")
        assert len(recent) == 2
        assert index.record_of_run("none") is None
