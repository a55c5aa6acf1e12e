"""The records index's tables, rows and database engines (factory/records/index_db.py uses them).

One row per record in `factory_records` (the whole record as JSON, plus the columns readers filter
on and a small summary for build figures and gc), each combination's newest record in
`factory_records_latest`, builds about to record in `factory_records_pending`, and the index's own
state in `factory_records_meta`. `LightRecord` is a record rebuilt from those columns.
"""

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import quote

from factory.errors import FactoryError
from factory.records.model import CompatibilityRecord, RecordFigures, record_figures

# 4: build figures as columns, with one covering index (`factory status` reads no JSON).
SCHEMA_VERSION = "4"
URL_ENV = "FACTORY_RECORDS_INDEX_URL"
SQLITE_NAME = "records-index.sqlite"
# Bound parameters per IN (...) query: SQLite allows 32,766, PostgreSQL 65,535.
IN_CHUNK = 500
SQLITE_BUSY_TIMEOUT_S = 60
# The record fields the index keeps as they are (name -> column width), in the rows it writes and
# the light records it reads back.
COPIED: dict[str, int] = {
    "build_id": 128,
    "manifest_id": 128,
    "platform": 64,
    "pool": 64,
    "status": 8,
    "build_key": 80,
    "record_key": 80,
    "finished_at": 40,
}

# The figure columns (RecordFigures' fields after the ids): what build metrics aggregate.
FIGURES: tuple[str, ...] = tuple(
    name for name in RecordFigures.__dataclass_fields__ if name not in COPIED
)


class RecordsIndexError(FactoryError):
    """The index database cannot be used (unreachable, refused, corrupt)."""


def default_url(data_dir: Path) -> str:
    """FACTORY_RECORDS_INDEX_URL, else the Dagster PostgreSQL database, else SQLite in data_dir."""
    explicit = os.environ.get(URL_ENV, "").strip()
    if explicit:
        return _with_dagster_password(explicit)
    host = os.environ.get("DAGSTER_PG_HOST", "").strip()
    if host:
        user = quote(os.environ.get("DAGSTER_PG_USERNAME", ""), safe="")
        password = quote(os.environ.get("DAGSTER_PG_PASSWORD", ""), safe="")
        port = os.environ.get("DAGSTER_PG_PORT", "5432").strip() or "5432"
        database = quote(os.environ.get("DAGSTER_PG_DB", "dagster").strip() or "dagster", safe="")
        return f"postgresql+psycopg2://{user}:{password}@{quote(host, safe='')}:{port}/{database}"
    return f"sqlite:///{Path(data_dir).resolve() / SQLITE_NAME}"


def _with_dagster_password(url: str) -> str:
    """A PostgreSQL URL without a password takes DAGSTER_PG_PASSWORD, so that the URL can live in
    a ConfigMap while the password stays in the Secret that Dagster's own pods read it from."""
    from sqlalchemy.engine import make_url

    password = os.environ.get("DAGSTER_PG_PASSWORD", "")
    try:
        parsed = make_url(url)
    except Exception:  # engine_for reports an unusable URL with its variable
        return url
    if parsed.get_backend_name() != "postgresql" or parsed.password or not password:
        return url
    return parsed.set(password=password).render_as_string(hide_password=False)


def redacted(url: str) -> str:
    """The URL as messages show it: no password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split(":", 1)[0] + ":…"


@cache
def tables():
    """The four tables; built on first use so that importing this module stays cheap."""
    import sqlalchemy as sa

    def column(name: str, **options) -> sa.Column:
        """A column the record copies as it is: one width wherever it appears."""
        return sa.Column(name, sa.String(COPIED[name]), **options)

    meta = sa.MetaData()
    records = sa.Table(
        "factory_records",
        meta,
        column("build_id", primary_key=True),
        *(column(name, nullable=False) for name in COPIED if name != "build_id"),
        sa.Column("image_digest", sa.String(80)),
        sa.Column("record_uri", sa.Text, nullable=False),
        sa.Column("worker", sa.String(256)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("record_json", sa.Text, nullable=False),
        # What figures and gc read, so they need not parse whole records (`summaries`).
        sa.Column("summary_json", sa.Text, nullable=False),
        # The build tag `<slug>-<12 hex>` the record's image was pushed under (factory.store.keys).
        sa.Column("image_tag", sa.String(160)),
        # 0 once gc removed the record's evidence, SBOM and provenance files.
        sa.Column("evidence_present", sa.Integer, nullable=False, server_default="1"),
        # 1 when the record's image was moved to quarantine (factory/supply_chain/quarantine.py).
        sa.Column("quarantined", sa.Integer, nullable=False, server_default="0"),
        sa.Column("indexed_at", sa.Float, nullable=False),
        sa.Column("build_s", sa.Float),
        sa.Column("test_s", sa.Float),
        sa.Column("sbom_s", sa.Float),
        sa.Column("cache_steps", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cache_cached", sa.Integer, nullable=False, server_default="0"),
        sa.Column("image_size_bytes", sa.BigInteger),
        sa.Column("image_layers", sa.Integer),
        sa.Column("rebuilt", sa.Boolean),
        # Covers what `figures` reads: a week of builds is one index range scan, without a
        # read of the rows (whose record JSON is most of the table).
        sa.Index(
            "factory_records_figures",
            "finished_at",
            *(name for name in RecordFigures.__dataclass_fields__ if name != "finished_at"),
        ),
        sa.Index("factory_records_combination", "manifest_id", "platform", "finished_at"),
        sa.Index("factory_records_build_key", "build_key"),
        sa.Index("factory_records_finished", "finished_at"),
        sa.Index("factory_records_run", "run_id"),
        sa.Index("factory_records_indexed", "indexed_at"),
        sa.Index("factory_records_image_tag", "manifest_id", "image_tag"),
        sa.Index("factory_records_digest", "image_digest"),
    )
    latest = sa.Table(
        "factory_records_latest",
        meta,
        column("manifest_id", primary_key=True),
        column("platform", primary_key=True),
        column("build_id", nullable=False),
        column("finished_at", nullable=False),
    )
    pending = sa.Table(
        "factory_records_pending",
        meta,
        column("build_id", primary_key=True),
        sa.Column("since", sa.Float, nullable=False),
    )
    info = sa.Table(
        "factory_records_meta",
        meta,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    return meta, records, latest, pending, info


ENGINES: dict[str, object] = {}


def engine_for(url: str):
    """One SQLAlchemy engine per URL and process (WAL and a busy timeout for SQLite)."""
    engine = ENGINES.get(url)
    if engine is not None:
        return engine
    import sqlalchemy as sa

    try:
        if url.startswith("sqlite:"):
            database = sa.engine.make_url(url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(
                url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}, poolclass=sa.pool.NullPool
            )

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_connection, _record):
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
    except Exception as exc:
        msg = f"records index {redacted(url)}: {exc} (check {URL_ENV})"
        raise RecordsIndexError(msg) from None
    ENGINES[url] = engine
    return engine


def _summary(record: CompatibilityRecord) -> dict:
    timings = dict(record.timings_s)
    if "test" not in timings and record.tests:
        # Older records only carry per-suite durations (as factory.report.metrics reads them).
        timings["test"] = sum(t.duration_s for t in record.tests)
    image = record.image
    return {
        "t": timings,
        "c": [record.cache.steps, record.cache.cached],
        "i": None
        if image is None
        else [image.ref, image.digest, image.size_bytes, image.layers, image.rebuilt],
        "e": sorted(k for k, v in record.evidence.items() if v is not None),
        "q": record.quarantine.ref if record.quarantine else None,
    }


@dataclass(frozen=True, slots=True)
class LightImage:
    ref: str
    digest: str | None
    size_bytes: int | None
    layers: int | None
    rebuilt: bool


@dataclass(frozen=True, slots=True)
class LightCache:
    steps: int
    cached: int


@dataclass(frozen=True, slots=True)
class LightQuarantine:
    ref: str


@dataclass(frozen=True, slots=True)
class LightRecord:
    """What build figures (factory.report.metrics) and gc (factory.records.retention) read of a
    record, from
    index columns that were validated when the record was indexed: ids, keys, status, times,
    image, cache, timings, which evidence kinds exist, and the quarantine reference. Made in a
    microsecond, where parsing the whole record takes a hundred."""

    build_id: str
    manifest_id: str
    platform: str
    pool: str
    status: str
    build_key: str
    record_key: str
    finished_at: str
    timings_s: dict
    cache: LightCache
    image: LightImage | None
    evidence: dict
    quarantine: LightQuarantine | None
    tests: tuple = ()

    @property
    def started_at(self) -> str:
        return self.finished_at


def light_record(row) -> LightRecord:
    summary = json.loads(row.summary_json)
    image = summary["i"]
    return LightRecord(
        **{name: getattr(row, name) for name in COPIED},
        timings_s=summary["t"],
        cache=LightCache(*summary["c"]),
        image=None if image is None else LightImage(*image),
        evidence=dict.fromkeys(summary["e"], True),
        quarantine=LightQuarantine(summary["q"]) if summary.get("q") else None,
    )


@cache
def _figure_columns() -> tuple[tuple[str, type | tuple[type, ...], bool], ...]:
    """(name, the Python type it reads back as, nullable) for each field of `RecordFigures`, as
    the table declares them."""
    records = tables()[1]
    out = []
    for name in RecordFigures.__dataclass_fields__:
        column = records.c[name]
        kind = column.type.python_type
        out.append((name, (int, float) if kind is float else kind, bool(column.nullable)))
    return tuple(out)


def figures_row(row) -> RecordFigures:
    """The figures of an index row; a TypeError when a column holds what the index never writes
    (the index file is a cache anyone could have changed)."""
    values = tuple(row)
    for (name, kind, nullable), value in zip(_figure_columns(), values, strict=True):
        if value is None and nullable:
            continue
        # bool is an int to isinstance; only the boolean column may hold one.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            msg = f"column {name} holds {type(value).__name__}"
            raise TypeError(msg)
    return RecordFigures(*values)


def _image_tag(record: CompatibilityRecord) -> str | None:
    from factory.platforms import BY_NAME

    platform = BY_NAME.get(record.platform)
    return f"{platform.slug}-{record.build_key[:12]}" if platform else None


def index_row(record: CompatibilityRecord, uri: str, now: float) -> dict:
    figures = record_figures(record)
    return {
        **{name: getattr(record, name) for name in COPIED},
        "image_digest": record.image.digest if record.image else None,
        "record_uri": uri,
        "worker": record.executor.worker if record.executor else None,
        "run_id": record.dagster.run_id,
        "record_json": json.dumps(record.model_dump(mode="json"), sort_keys=True),
        "summary_json": json.dumps(_summary(record)),
        "image_tag": _image_tag(record),
        "quarantined": int(bool(record.quarantine and record.quarantine.ref)),
        "indexed_at": now,
        **{name: getattr(figures, name) for name in FIGURES},
    }


def chunks(values: list, size: int = IN_CHUNK) -> Iterable[list]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
