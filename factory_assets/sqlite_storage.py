"""The local SQLite instance's storage as `factory run`'s workers open it: the same files, engines
kept.

Dagster's SQLite storages build a new SQLAlchemy engine for every connection (several per event:
the run's own database, then the cross-run index for asset events), and a new engine costs about
1.5 ms before any row is written. A combination's run writes some 25 events and checks its run
record many times, so a worker spent about 0.2 s a run making engines. Here each database keeps
its engine for the life of the worker. Nothing else changes: the same database files under
DAGSTER_HOME, still one short-lived connection per transaction (NullPool, so no connection and no
lock outlives its transaction, and the UI, the daemon and other workers see every write as
before), the same schema checks on first use.

Only `factory run`'s workers open the instance this way (factory_assets/launcher.py), and only
when DAGSTER_HOME's dagster.yaml names no storage of its own: an operator's PostgreSQL instance is
used as configured.
"""

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

# Run databases a worker keeps an engine for: it writes to one run at a time, plus the index.
MAX_ENGINES = 16


class KeptEngineEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage with one engine per database (run shard or index), kept."""

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        super().__init__(base_dir, inst_data=inst_data)

    def _engine(self, shard: str) -> Engine:
        """The kept engine of a database (called under the parent's `_db_lock`)."""
        engine = self._engines.pop(shard, None)
        if engine is None:
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=NullPool,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
        self._engines[shard] = engine  # the most recently used last
        while len(self._engines) > MAX_ENGINES:
            _, oldest = self._engines.popitem(last=False)
            oldest.dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # As the parent does (one lock for the watcher threads, the schema made on first use of a
        # database), without building and disposing of an engine each time.
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def dispose(self) -> None:
        super().dispose()
        with self._db_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


class KeptEngineRunStorage(SqliteRunStorage):
    """SqliteRunStorage with its one engine kept."""

    def __init__(self, conn_string: str, inst_data=None):
        super().__init__(conn_string, inst_data)
        self._engine = create_engine(conn_string, poolclass=NullPool)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()


class KeptEngineSqliteStorage(DagsterSqliteStorage):
    """DagsterSqliteStorage (Dagster's default local storage, same layout under `base_dir`) made
    of the storages above; schedules as Dagster keeps them."""

    def __init__(self, base_dir: str, inst_data=None):
        # What DagsterSqliteStorage.__init__ sets, with the storages above: calling it would open
        # (and check the schema of) Dagster's own three first, only to replace them.
        self.base_dir = base_dir
        self._run_storage = KeptEngineRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = KeptEngineEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> "KeptEngineSqliteStorage":
        return cls.from_local(inst_data=inst_data, **config_value)


def kept_engine_overrides(home: str) -> dict:
    """Instance overrides that open DAGSTER_HOME's default SQLite storage through the classes
    above (for `InstanceRef.from_dir(home, overrides=...)`)."""
    return {
        "storage": {
            "custom": {
                "module": __name__,
                "class": KeptEngineSqliteStorage.__name__,
                "config": {"base_dir": home},
            }
        }
    }
