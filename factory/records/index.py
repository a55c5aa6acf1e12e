"""The records index: one row per compatibility record in a real database, so that reading the
current state costs the number of combinations, not the length of the history.

The record files stay the source of truth. A record is written in three steps:

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

The database is SQLite under the data dir by default, or any SQLAlchemy URL in
FACTORY_RECORDS_INDEX_URL; with Dagster on PostgreSQL (DAGSTER_PG_* set) the same database hosts
it. The SQL is SQLAlchemy Core, the same for both.
"""

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from factory.records.index_schema import (
    SCHEMA_VERSION,
    LightRecord,
    RecordsIndexError,
    chunks,
    default_url,
    engine_for,
    index_row,
    light_record,
    redacted,
    tables,
)
from factory.records.model import CompatibilityRecord
from factory.records.store import LocalRecordStore, RecordStore, SkipReport, warn

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


def finished_after(window: timedelta) -> str | None:
    """The `finished_at` lower bound of a window ending now, for `select` (None: no bound).

    A minute early: records may write their times as `Z` or `+00:00`, which sort differently
    within a second; callers filter the exact window on parsed times.
    """
    now = datetime.now(UTC)
    if window >= now - datetime(1971, 1, 1, tzinfo=UTC):
        return None
    return (now - window - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _lights(rows) -> list[LightRecord]:
    """Light records of the rows; a row whose columns are not what the index wrote is skipped
    with a warning (the index file is a cache anyone could have changed)."""
    out = []
    for row in rows:
        try:
            out.append(light_record(row))
        except (TypeError, ValueError, KeyError, IndexError):
            warn(
                f"warning: records index row {row.build_id} is not a record; "
                "run `factory records reindex`"
            )
    return out


class RecordsIndex:
    """The index of one record store; see the module docstring."""

    def __init__(self, url: str, store: RecordStore):
        self.url = url
        self.store = store
        self._checked = False
        self._meta, self._records, self._latest, self._pending, self._info = tables()

    @property
    def shown_url(self) -> str:
        return redacted(self.url)

    # -- plumbing -------------------------------------------------------------------------------

    def _connect(self):
        return self._engine().begin()

    def _engine(self):
        return engine_for(self.url)

    def _sql(self, what: str, fn):
        """Run fn(connection) in one transaction; database trouble becomes an RecordsIndexError."""
        import sqlalchemy.exc as sa_exc

        try:
            with self._connect() as conn:
                return fn(conn)
        except sa_exc.SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
            msg = f"records index {redacted(self.url)}: cannot {what}: {detail}"
            raise RecordsIndexError(msg) from None

    def _insert(self, table):
        """An INSERT with ON CONFLICT support for this database."""
        if self._engine().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def _location(self) -> str:
        return self.store.location("record")

    def _folder_mtime(self) -> str | None:
        if not isinstance(self.store, LocalRecordStore):
            return None
        try:
            return str(os.stat(self._location()).st_mtime_ns)
        except OSError:
            return "absent"

    def _set_info(self, conn, values: dict[str, str]) -> None:
        stmt = self._insert(self._info)
        for key, value in values.items():
            conn.execute(
                stmt.values(key=key, value=value).on_conflict_do_update(
                    index_elements=["key"], set_={"value": value}
                )
            )

    def _add_rows(self, conn, rows: list[dict]) -> None:
        """Insert record rows (a row already there is replaced: records never change, so this
        only repairs) and move each combination's newest pointer forward."""
        if not rows:
            return
        import sqlalchemy as sa

        stmt = self._insert(self._records)
        # evidence_present is gc's to change: re-indexing a record does not bring its files back.
        columns = [
            c.name for c in self._records.columns if c.name not in ("build_id", "evidence_present")
        ]
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["build_id"], set_={c: stmt.excluded[c] for c in columns}
            ),
            rows,
        )
        latest = self._insert(self._latest)
        newer = sa.or_(
            latest.excluded.finished_at > self._latest.c.finished_at,
            sa.and_(
                latest.excluded.finished_at == self._latest.c.finished_at,
                latest.excluded.build_id > self._latest.c.build_id,
            ),
        )
        conn.execute(
            latest.on_conflict_do_update(
                index_elements=["manifest_id", "platform"],
                set_={
                    "build_id": latest.excluded.build_id,
                    "finished_at": latest.excluded.finished_at,
                },
                where=newer,
            ),
            [
                {k: r[k] for k in ("manifest_id", "platform", "build_id", "finished_at")}
                for r in rows
            ],
        )

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

    def _info_values(self, conn) -> dict[str, str]:
        import sqlalchemy as sa

        if not sa.inspect(conn).has_table(self._info.name):
            return {}
        return {k: v for k, v in conn.execute(sa.select(self._info.c.key, self._info.c.value))}

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

    def _indexed_ids(self, conn) -> set[str]:
        import sqlalchemy as sa

        return {row[0] for row in conn.execute(sa.select(self._records.c.build_id))}

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

    def _repair_latest(self, conn) -> None:
        """Point every combination at its newest indexed record (after rows were dropped)."""
        import sqlalchemy as sa

        r = self._records
        conn.execute(sa.delete(self._latest))
        newest = (
            sa.select(
                r.c.manifest_id,
                r.c.platform,
                r.c.build_id,
                r.c.finished_at,
                sa.func.row_number()
                .over(
                    partition_by=(r.c.manifest_id, r.c.platform),
                    order_by=(r.c.finished_at.desc(), r.c.build_id.desc()),
                )
                .label("n"),
            )
        ).subquery()
        conn.execute(
            sa.insert(self._latest).from_select(
                ["manifest_id", "platform", "build_id", "finished_at"],
                sa.select(
                    newest.c.manifest_id, newest.c.platform, newest.c.build_id, newest.c.finished_at
                ).where(newest.c.n == 1),
            )
        )

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
            rows = list(
                conn.execute(
                    sa.select(
                        r.c.build_id,
                        r.c.record_json,
                        r.c.finished_at,
                        r.c.manifest_id,
                        r.c.platform,
                    )
                )
            )
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
        for build_id, record_json, finished_at, manifest_id, platform in rows:
            seen.add(build_id)
            record = records.get(build_id)
            if record is None:
                report.extra.append(build_id)
                continue
            if _json_or_none(record_json) != record.model_dump(mode="json"):
                report.differ.append(build_id)
            key = (manifest_id, platform)
            if key not in newest or (finished_at, build_id) > newest[key]:
                newest[key] = (finished_at, build_id)
        report.missing = sorted(set(records) - seen)
        pointers = {(m, p): b for m, p, b in latest}
        for key, (_, build_id) in newest.items():
            if pointers.get(key) != build_id:
                report.latest_wrong.append(f"{key[0]} {key[1]}")
        report.latest_wrong += [f"{m} {p}" for (m, p) in pointers if (m, p) not in newest]
        report.extra.sort()
        return report

    # -- reading --------------------------------------------------------------------------------

    def _parse(self, rows: Iterable) -> list[CompatibilityRecord]:
        out = []
        for build_id, record_json in rows:
            try:
                out.append(CompatibilityRecord.model_validate_json(record_json))
            except ValidationError:
                warn(
                    f"warning: records index row {build_id} is not a record; "
                    "run `factory records reindex`"
                )
        return out

    def latest(self) -> dict[tuple[str, str], CompatibilityRecord]:
        """The newest record of every combination."""
        import sqlalchemy as sa

        self.ensure_current()
        r, latest = self._records, self._latest
        query = sa.select(r.c.build_id, r.c.record_json).join(
            latest, latest.c.build_id == r.c.build_id
        )
        rows = self._sql("read the newest records", lambda conn: list(conn.execute(query)))
        return {(x.manifest_id, x.platform): x for x in self._parse(rows)}

    def built_keys(self, build_keys: Iterable[str]) -> set[str]:
        """Those of `build_keys` that some record built an image for."""
        import sqlalchemy as sa

        self.ensure_current()
        keys = sorted(set(build_keys))
        r = self._records

        def go(conn):
            found = set()
            for chunk in chunks(keys):
                query = (
                    sa.select(r.c.build_key)
                    .where(r.c.build_key.in_(chunk), r.c.image_digest.is_not(None))
                    .distinct()
                )
                found.update(row[0] for row in conn.execute(query))
            return found

        return self._sql("look up built images", go)

    def failure_counts(self, failing: Iterable[CompatibilityRecord]) -> dict[tuple[str, str], int]:
        """(manifest, platform) -> failed attempts of each given record's record key."""
        import sqlalchemy as sa

        wanted = {r.record_key: (r.manifest_id, r.platform) for r in failing}
        r = self._records

        def go(conn):
            counts: dict[tuple[str, str], int] = {}
            for chunk in chunks(sorted(wanted)):
                query = (
                    sa.select(r.c.manifest_id, r.c.platform, r.c.record_key, sa.func.count())
                    .where(r.c.record_key.in_(chunk), r.c.status != "pass")
                    .group_by(r.c.manifest_id, r.c.platform, r.c.record_key)
                )
                for manifest_id, platform, record_key, n in conn.execute(query):
                    if wanted.get(record_key) == (manifest_id, platform):
                        counts[(manifest_id, platform)] = int(n)
            return counts

        return self._sql("count failed attempts", go)

    def _where(self, manifest_ids, platforms, finished_after, finished_before, run_id) -> list:
        r = self._records
        conditions = []
        if manifest_ids := list(manifest_ids):
            conditions.append(r.c.manifest_id.in_(manifest_ids))
        if platforms := list(platforms):
            conditions.append(r.c.platform.in_(platforms))
        if finished_after is not None:
            conditions.append(r.c.finished_at >= finished_after)
        if finished_before is not None:
            conditions.append(r.c.finished_at < finished_before)
        if run_id is not None:
            conditions.append(r.c.run_id == run_id)
        return conditions

    def _rows(self, columns: list, conditions: list, newest_per_combination: int | None) -> list:
        import sqlalchemy as sa

        self.ensure_current()
        r = self._records
        columns = [*columns, r.c.finished_at.label("_at"), r.c.build_id.label("_id")]
        if newest_per_combination is not None:
            rank = (
                sa.func.row_number()
                .over(
                    partition_by=(r.c.manifest_id, r.c.platform),
                    order_by=(r.c.finished_at.desc(), r.c.build_id.desc()),
                )
                .label("n")
            )
            inner = sa.select(*columns, rank).where(*conditions).subquery()
            query = (
                sa.select(*[inner.c[c.name] for c in columns])
                .where(inner.c.n <= newest_per_combination)
                .order_by(inner.c._at, inner.c._id)
            )
        else:
            query = sa.select(*columns).where(*conditions).order_by(r.c.finished_at, r.c.build_id)
        return self._sql("read records", lambda conn: list(conn.execute(query)))

    def select(
        self,
        *,
        manifest_ids: Iterable[str] = (),
        platforms: Iterable[str] = (),
        finished_after: str | None = None,
        finished_before: str | None = None,
        newest_per_combination: int | None = None,
        run_id: str | None = None,
    ) -> list[CompatibilityRecord]:
        """Whole records matching every filter given, oldest first."""
        r = self._records
        conditions = self._where(manifest_ids, platforms, finished_after, finished_before, run_id)
        rows = self._rows([r.c.build_id, r.c.record_json], conditions, newest_per_combination)
        return self._parse((row.build_id, row.record_json) for row in rows)

    def summaries(
        self,
        *,
        manifest_ids: Iterable[str] = (),
        platforms: Iterable[str] = (),
        finished_after: str | None = None,
        finished_before: str | None = None,
        image_tags: Iterable[str] | None = None,
        image_digests: Iterable[str] | None = None,
        evidence_present: bool | None = None,
        quarantined: bool | None = None,
    ) -> list[LightRecord]:
        """Light records (`LightRecord`: no inputs, tests or error detail) matching every filter,
        oldest first: what build figures and gc read, at a fraction of the cost."""
        r = self._records
        conditions = self._where(manifest_ids, platforms, finished_after, finished_before, None)
        if image_tags is not None:
            conditions.append(r.c.image_tag.in_(sorted(set(image_tags))))
        if image_digests is not None:
            conditions.append(r.c.image_digest.in_(sorted(set(image_digests))))
        if evidence_present is not None:
            conditions.append(r.c.evidence_present == int(evidence_present))
        if quarantined is not None:
            conditions.append(r.c.quarantined == int(quarantined))
        rows = self._rows(self._light_columns(), conditions, None)
        return _lights(rows)

    def _light_columns(self) -> list:
        """The columns `light_record` reads."""
        r = self._records
        names = ("build_id", "manifest_id", "platform", "pool", "status", "build_key")
        return [*(r.c[n] for n in names), r.c.record_key, r.c.finished_at, r.c.summary_json]

    def newest_summaries(self, manifest_ids: Iterable[str] | None = None) -> list[LightRecord]:
        """The newest record of every combination (of these manifests), light."""
        import sqlalchemy as sa

        self.ensure_current()
        r, latest = self._records, self._latest
        query = sa.select(*self._light_columns()).join(latest, latest.c.build_id == r.c.build_id)
        if manifest_ids is not None:
            query = query.where(r.c.manifest_id.in_(sorted(set(manifest_ids))))
        rows = self._sql("read the newest records", lambda conn: list(conn.execute(query)))
        return _lights(rows)

    def manifest_ids(self) -> list[str]:
        """Every manifest that has a record (one row per combination is read)."""
        import sqlalchemy as sa

        self.ensure_current()
        query = sa.select(self._latest.c.manifest_id).distinct()
        return sorted(self._sql("read manifests", lambda conn: [r[0] for r in conn.execute(query)]))

    def mark_evidence_removed(self, build_ids: Iterable[str]) -> None:
        """gc removed these records' evidence files: later gc plans need not look at them."""
        import sqlalchemy as sa

        ids = sorted(set(build_ids))

        def go(conn):
            for chunk in chunks(ids):
                conn.execute(
                    sa.update(self._records)
                    .where(self._records.c.build_id.in_(chunk))
                    .values(evidence_present=0)
                )

        self._sql("mark removed evidence", go)

    def record_of_run(self, run_id: str) -> CompatibilityRecord | None:
        """The record a Dagster run wrote, if indexed."""
        found = self.select(run_id=run_id)
        return found[-1] if found else None

    def generation(self) -> list:
        """[rows, newest indexing time]: changes whenever a record is indexed."""
        import sqlalchemy as sa

        self.ensure_current()
        r = self._records
        query = sa.select(sa.func.count(), sa.func.max(r.c.indexed_at))
        row = self._sql("read its generation", lambda conn: conn.execute(query).one())
        return [int(row[0]), row[1]]


def open_index(store: RecordStore, data_dir: Path) -> RecordsIndex:
    """The index for `store`, attached so that `store.write_record` keeps it current."""
    index = RecordsIndex(default_url(data_dir), store)
    store.index = index
    return index
