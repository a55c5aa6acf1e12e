"""Keeping the records index true to the record files, which stay the source of truth.

A record is written in three steps:

1. a *pending* row names the build (`factory_records_pending`);
2. the record file is written to the record store (local folder or S3), once;
3. one transaction adds the record's row (`factory_records`), moves the combination's newest
   pointer forward (`factory_records_latest`, only ever to a newer record) and drops the pending
   row.

Readers (plan, matrix, status, gc, publish, sensors) call `ensure_current()` first. It never lists
the store in normal operation, yet never trusts a stale index silently:

- no index, another schema version, or an index made for another store: rebuilt from a full
  listing, with a message;
- a pending row: its writer stopped between steps 1 and 3. The record is fetched by build id (one
  read) and indexed if it was written, with a message; a pending row older than
  `PENDING_GIVE_UP_S` whose record never appeared is dropped (the build died; see the DLQ);
- local store only: the records folder's mtime differs from the one the index saw at its last
  write. Something wrote or removed record files behind the index's back (a copy, an older
  Factory): the folder is listed once and the difference indexed, with a message.

`reindex()` rebuilds from the records and `check()` compares the two (`factory records reindex`,
`factory records check`). Rows are only ever added or corrected, never dropped while a record is
being written: a record written during a reindex keeps its row.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from factory.records.index_db import IndexDatabase
from factory.records.index_schema import (
    COPIED,
    FIGURES,
    SCHEMA_VERSION,
    chunks,
    index_row,
    redacted,
)
from factory.records.model import CompatibilityRecord, record_figures
from factory.records.store import SkipReport, warn

# A pending row this old without its record belongs to a build that died before recording.
PENDING_GIVE_UP_S = 6 * 3600.0

Echo = Callable[[str], None]


@dataclass
class CheckReport:
    """What `check()` found: records the index lacks, rows without a record, rows that differ."""

    records: int = 0
    rows: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    differ: list[str] = field(default_factory=list)
    latest_wrong: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.differ or self.latest_wrong)

    def lines(self) -> list[str]:
        out = [f"{self.records} records, {self.rows} index rows"]
        for label, ids in (
            ("not in the index", self.missing),
            ("in the index without a record", self.extra),
            ("differ from their record", self.differ),
            ("combinations whose newest pointer is wrong", self.latest_wrong),
        ):
            if ids:
                shown = ", ".join(ids[:10]) + (
                    f" (and {len(ids) - 10} more)" if len(ids) > 10 else ""
                )
                out.append(f"{len(ids)} {label}: {shown}")
        out.append("index matches the records" if self.ok else "index does NOT match the records")
        return out


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


# The columns `check` compares with the record they were copied or computed from.
COMPARED = (*COPIED, *FIGURES)


class IndexUpkeep(IndexDatabase):
    """Writing records into the index and keeping it current (module docstring)."""

    # -- writing --------------------------------------------------------------------------------

    def begin(self, build_id: str) -> None:
        """Step 1: say a record is about to be written."""

        def go(conn):
            self._meta.create_all(conn)
            conn.execute(
                self._insert(self._pending)
                .values(build_id=build_id, since=time.time())
                .on_conflict_do_nothing()
            )

        self._sql("note a pending record", go)

    def add(self, record: CompatibilityRecord, uri: str) -> None:
        """Step 3: index a record just written."""
        import sqlalchemy as sa

        def go(conn):
            self._add_rows(conn, [index_row(record, uri, time.time())])
            conn.execute(
                sa.delete(self._pending).where(self._pending.c.build_id == record.build_id)
            )
            mtime = self._folder_mtime()
            if mtime is not None:
                self._set_info(conn, {"records_mtime_ns": mtime})

        self._sql("index a record", go)

    # -- keeping it current ---------------------------------------------------------------------

    def refresh(self) -> None:
        """Check again on the next read (other processes wrote records since)."""
        self._checked = False

    def ensure_current(self, echo: Echo = warn) -> None:
        """Make the index trustworthy before reading it (module docstring); once per object."""
        if self._checked:
            return
        info = self._sql("read its state", self._info_values)
        location = self._location()
        if info.get("schema_version") != SCHEMA_VERSION or info.get("location") != location:
            why = (
                "missing"
                if "schema_version" not in info
                else "made for another record store"
                if info.get("location") not in (None, location)
                else "of another version"
            )
            if info.get("schema_version") not in (None, SCHEMA_VERSION):
                # Another layout: the rows are rebuilt from the records into new tables.
                self._sql("drop old tables", lambda conn: self._meta.drop_all(conn))
            counts = self.reindex()
            if why == "missing" and not counts["records"]:
                echo(f"records index created at {redacted(self.url)}")
            else:
                echo(
                    f"records index {redacted(self.url)} was {why}; built it from {location}: "
                    f"{counts['records']} records indexed"
                )
            self._checked = True
            return
        self._resolve_pending(echo)
        mtime = self._folder_mtime()
        if mtime is not None and info.get("records_mtime_ns") != mtime:
            added, removed = self._reconcile()
            if added or removed:
                echo(
                    f"records index was behind {location} (records changed outside Factory): "
                    f"indexed {added} new, dropped {removed} gone"
                )
        self._checked = True

    def _resolve_pending(self, echo: Echo) -> None:
        import sqlalchemy as sa

        pending = self._sql(
            "read pending records",
            lambda conn: list(
                conn.execute(sa.select(self._pending.c.build_id, self._pending.c.since))
            ),
        )
        if not pending:
            return
        report = SkipReport(self._location())
        found, dropped = [], []
        for build_id, since in pending:
            record = self.store.read_record(build_id, report)
            if record is not None:
                found.append(index_row(record, self.store.uri("record", build_id), time.time()))
            elif time.time() - since > PENDING_GIVE_UP_S:
                dropped.append(build_id)
        report.done()

        def go(conn):
            self._add_rows(conn, found)
            done = [r["build_id"] for r in found] + dropped
            for chunk in chunks(done):
                conn.execute(sa.delete(self._pending).where(self._pending.c.build_id.in_(chunk)))

        self._sql("index pending records", go)
        if found:
            echo(
                f"records index: indexed {len(found)} record(s) whose writer stopped "
                "before indexing"
            )

    def _reconcile(self) -> tuple[int, int]:
        """List the store once; index what is missing, drop rows whose record is gone."""
        import sqlalchemy as sa

        started = time.time()
        mtime = self._folder_mtime()
        listed = set(self.store.list_ids("record"))
        indexed = self._sql("read its rows", self._indexed_ids)
        report = SkipReport(self._location())
        rows = []
        for build_id in sorted(listed - indexed):
            record = self.store.read_record(build_id, report)
            if record is not None:
                rows.append(index_row(record, self.store.uri("record", build_id), time.time()))
        report.done()
        gone = sorted(indexed - listed)

        def go(conn):
            for chunk in chunks(rows):
                self._add_rows(conn, chunk)
            for chunk in chunks(gone):
                # Only rows indexed before this listing: a record written since keeps its row.
                conn.execute(
                    sa.delete(self._records).where(
                        self._records.c.build_id.in_(chunk), self._records.c.indexed_at < started
                    )
                )
            if gone:
                self._repair_latest(conn)
            if mtime is not None:
                self._set_info(conn, {"records_mtime_ns": mtime})

        self._sql("update its rows", go)
        return len(rows), len(gone)

    def reindex(self, echo: Echo | None = None) -> dict[str, int]:
        """Rebuild from a full listing of the records; concurrent writers lose nothing."""
        import sqlalchemy as sa

        started = time.time()
        mtime = self._folder_mtime()
        self._sql("create its tables", lambda conn: self._meta.create_all(conn))
        ids = self.store.list_ids("record")
        report = SkipReport(self._location())
        rows = []
        for n, build_id in enumerate(ids, 1):
            record = self.store.read_record(build_id, report)
            if record is not None:
                rows.append(index_row(record, self.store.uri("record", build_id), time.time()))
            if echo and n % 10_000 == 0:
                echo(f"  read {n}/{len(ids)} records")
        report.done()
        listed = set(ids)

        def go(conn):
            for chunk in chunks(rows):
                self._add_rows(conn, chunk)
            stale = [i for i in self._indexed_ids(conn) if i not in listed]
            for chunk in chunks(stale):
                conn.execute(
                    sa.delete(self._records).where(
                        self._records.c.build_id.in_(chunk), self._records.c.indexed_at < started
                    )
                )
            self._repair_latest(conn)
            info = {"schema_version": SCHEMA_VERSION, "location": self._location()}
            if mtime is not None:
                info["records_mtime_ns"] = mtime
            self._set_info(conn, info)

        self._sql("rebuild", go)
        self._checked = True
        return {"records": len(rows), "skipped": len(report.skipped)}

    def check(self) -> CheckReport:
        """Compare every record with its row, and every newest pointer with the rows."""
        import sqlalchemy as sa

        report = CheckReport()
        skips = SkipReport(self._location())
        records = {r.build_id: r for r in self.store.records(skips)}
        skips.done()
        report.records = len(records)
        r = self._records

        def read(conn):
            if not sa.inspect(conn).has_table(r.name):
                return [], []
            rows = list(conn.execute(sa.select(r.c.record_json, *(r.c[name] for name in COMPARED))))
            latest = list(
                conn.execute(
                    sa.select(
                        self._latest.c.manifest_id, self._latest.c.platform, self._latest.c.build_id
                    )
                )
            )
            return rows, latest

        rows, latest = self._sql("read its rows", read)
        report.rows = len(rows)
        seen = set()
        newest: dict[tuple[str, str], tuple[str, str]] = {}
        for record_json, *columns in rows:
            row = dict(zip(COMPARED, columns, strict=True))
            build_id = row["build_id"]
            seen.add(build_id)
            record = records.get(build_id)
            if record is None:
                report.extra.append(build_id)
                continue
            stated = record_figures(record)
            if _json_or_none(record_json) != record.model_dump(mode="json") or any(
                row[name] != getattr(stated if name in FIGURES else record, name)
                for name in COMPARED
            ):
                report.differ.append(build_id)
            key = (row["manifest_id"], row["platform"])
            if key not in newest or (row["finished_at"], build_id) > newest[key]:
                newest[key] = (row["finished_at"], build_id)
        report.missing = sorted(set(records) - seen)
        pointers = {(m, p): b for m, p, b in latest}
        for key, (_, build_id) in newest.items():
            if pointers.get(key) != build_id:
                report.latest_wrong.append(f"{key[0]} {key[1]}")
        report.latest_wrong += [f"{m} {p}" for (m, p) in pointers if (m, p) not in newest]
        report.extra.sort()
        return report
