"""The records index: one row per compatibility record in a real database, so that reading the
current state costs the number of combinations, not the length of the history.

Readers (plan, matrix, status, gc, publish, sensors) go through `RecordsIndex`, whose every query
first makes sure the index is current (`ensure_current`, factory/records/index_upkeep.py: records
written, pending or changed behind its back are indexed first). `open_index` attaches an index to
a record store, so that `write_record` keeps it current.

The database is SQLite under the data dir by default, or any SQLAlchemy URL in
FACTORY_RECORDS_INDEX_URL; with Dagster on PostgreSQL (DAGSTER_PG_* set) the same database hosts
it. The SQL is SQLAlchemy Core, the same for both (factory/records/index_schema.py,
factory/records/index_db.py).
"""

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from factory.records.index_schema import (
    COPIED,
    LightRecord,
    chunks,
    default_url,
    figures_row,
    light_record,
)
from factory.records.index_upkeep import IndexUpkeep
from factory.records.model import CompatibilityRecord, RecordFigures
from factory.records.store import RecordStore, warn


def finished_after(window: timedelta) -> str | None:
    """The `finished_at` lower bound of a window ending now, for `select` (None: no bound).

    A minute early: records may write their times as `Z` or `+00:00`, which sort differently
    within a second; callers filter the exact window on parsed times.
    """
    now = datetime.now(UTC)
    if window >= now - datetime(1971, 1, 1, tzinfo=UTC):
        return None
    return (now - window - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _readable(rows, make: Callable) -> list:
    """make(row) for each row; a row whose columns are not what the index wrote is skipped with
    a warning (the index file is a cache anyone could have changed)."""
    out = []
    for row in rows:
        try:
            out.append(make(row))
        except (TypeError, ValueError, KeyError, IndexError):
            warn(
                f"warning: records index row {row.build_id} is not a record; "
                "run `factory records reindex`"
            )
    return out


class RecordsIndex(IndexUpkeep):
    """The index of one record store: what readers ask of it."""

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

    def figures(self, *, finished_after: str | None = None) -> list[RecordFigures]:
        """The build figures of the records that finished at or after `finished_after` (all when
        None), in no particular order: what `factory status` and the matrix's metadata
        aggregate. One range scan of a covering index; no record JSON is read."""
        import sqlalchemy as sa

        self.ensure_current()
        r = self._records
        query = sa.select(*(r.c[name] for name in RecordFigures.__dataclass_fields__))
        if finished_after is not None:
            query = query.where(r.c.finished_at >= finished_after)
        rows = self._sql("read build figures", lambda conn: conn.execute(query).all())
        return _readable(rows, figures_row)

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
        return _readable(rows, light_record)

    def _light_columns(self) -> list:
        """The columns `light_record` reads."""
        r = self._records
        return [*(r.c[name] for name in COPIED), r.c.summary_json]

    def newest_summaries(self, manifest_ids: Iterable[str] | None = None) -> list[LightRecord]:
        """The newest record of every combination (of these manifests), light."""
        import sqlalchemy as sa

        self.ensure_current()
        r, latest = self._records, self._latest
        query = sa.select(*self._light_columns()).join(latest, latest.c.build_id == r.c.build_id)
        if manifest_ids is not None:
            query = query.where(r.c.manifest_id.in_(sorted(set(manifest_ids))))
        rows = self._sql("read the newest records", lambda conn: list(conn.execute(query)))
        return _readable(rows, light_record)

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
