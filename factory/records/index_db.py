"""One record store's index in its database: transactions and their errors, the upsert that adds
record rows and moves each combination's newest pointer forward, and the index's own state
(`factory_records_meta`). The tables are factory/records/index_schema.py's; keeping them true to
the store is factory/records/index_upkeep.py, reading them factory/records/index.py.
"""

import os

from factory.records.index_schema import RecordsIndexError, engine_for, redacted, tables
from factory.records.store import LocalRecordStore, RecordStore


class IndexDatabase:
    """The index tables of `store` in the database at `url`."""

    def __init__(self, url: str, store: RecordStore):
        self.url = url
        self.store = store
        self._checked = False
        self._meta, self._records, self._latest, self._pending, self._info = tables()

    @property
    def shown_url(self) -> str:
        return redacted(self.url)

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

    def _info_values(self, conn) -> dict[str, str]:
        import sqlalchemy as sa

        if not sa.inspect(conn).has_table(self._info.name):
            return {}
        return {k: v for k, v in conn.execute(sa.select(self._info.c.key, self._info.c.value))}

    def _indexed_ids(self, conn) -> set[str]:
        import sqlalchemy as sa

        return {row[0] for row in conn.execute(sa.select(self._records.c.build_id))}

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
