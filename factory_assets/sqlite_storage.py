"""The local SQLite instance's storage as `factory run`'s workers open it: the same files, engines
and connections kept, new run databases copied from a template.

Dagster's SQLite storages build a new SQLAlchemy engine and open a new connection for every
transaction (several per event: the run's own database, then the cross-run index for asset
events), and make each run's new database by creating its tables and stamping its schema
revision with alembic, which loads every migration script (about 0.1 s of CPU per run). A
combination's run writes some 25 events and checks its run record many times. Here:

- each database keeps its engine, and its connections, for the life of the worker. An idle
  SQLite connection holds no lock (a transaction takes its locks and releases them at its end), so
  the UI, the daemon and other workers see every write as before;
- a new run's database is a copy of a template made once, by Dagster's own code, in a scratch
  folder: the same tables, indexes, journal mode and schema revision. The copy appears under its
  name complete, by a hard link, so nothing ever sees it half written;
- whether the index has a table is asked before every dynamic-partition query (a dozen times a
  run), and Dagster answers it with a new engine, a new connection and a schema read each time.
  Here a table found is remembered: tables are added by migrations, never dropped under a
  running instance.

Connections must not cross a fork: `release_connections` closes them (the fork server calls it
after opening the instance, factory_assets/worker_start.py), and a forked child drops any it
inherited without touching them.

Only `factory run`'s workers open the instance this way (factory_assets/launcher.py), and only
when DAGSTER_HOME's dagster.yaml names no storage of its own: an operator's PostgreSQL instance is
used as configured.
"""

import os
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
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

# Run databases a worker keeps an engine for: it writes to one run at a time, plus the index.
MAX_ENGINES = 16
# Connections kept per database; a thread that needs one more while they are in use gets a
# short-lived one.
POOL_SIZE = 1
POOL_OVERFLOW = 8

# Every engine made here, to drop their connections in a forked child.
_ENGINES: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def _kept_engine(conn_string: str, **connect_args) -> Engine:
    engine = create_engine(
        conn_string,
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        connect_args=connect_args,
    )
    _ENGINES.add(engine)
    return engine


def _drop_inherited_connections() -> None:
    # In a forked child: forget the parent's connections without closing them (closing would act
    # on the parent's database handles); the child opens its own.
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_drop_inherited_connections)


class KeptEngineEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage with one engine per database (run shard or index), kept, and new run
    databases copied from a template."""

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._template: bytes | None = None
        self._tables_found: set[str] = set()
        super().__init__(base_dir, inst_data=inst_data)

    def has_table(self, table_name: str) -> bool:
        # Asked with an index transaction open too (under `_db_lock`): a miss is answered the
        # parent's way, on a connection of its own.
        if table_name in self._tables_found:
            return True
        found = super().has_table(table_name)
        if found:
            self._tables_found.add(table_name)
        return found

    def _engine(self, shard: str) -> Engine:
        """The kept engine of a database (called under the parent's `_db_lock`)."""
        engine = self._engines.pop(shard, None)
        if engine is None:
            engine = _kept_engine(
                self.conn_string_for_shard(shard), timeout=SQLITE_BUSY_TIMEOUT_SECONDS
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
                if not self._copy_template(shard):
                    self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def prepare_run_template(self) -> None:
        """Make the template of a new run's database: Dagster's own `_initdb` on a scratch file,
        whose bytes are kept (a few hundred KB)."""
        scratch = tempfile.mkdtemp(prefix="factory-run-db-")
        try:
            path = os.path.join(scratch, "template.db")
            engine = create_engine(f"sqlite:///{path}")
            try:
                self._initdb(engine)
            finally:
                engine.dispose()  # the last connection closed: the journal is folded in
            with open(path, "rb") as template:
                self._template = template.read()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _copy_template(self, shard: str) -> bool:
        """Put a new run's database in place from the template; False when there is none to
        copy, or the database already exists (then it is checked and made as Dagster does)."""
        target = self.path_for_shard(shard)
        if self._template is None or shard == INDEX_SHARD_NAME or os.path.exists(target):
            return False
        scratch = None
        try:
            fd, scratch = tempfile.mkstemp(prefix=f".{shard}.", dir=self._base_dir)
            with os.fdopen(fd, "wb") as copy:
                copy.write(self._template)
            os.link(scratch, target)  # fails if it appeared meanwhile: then it is not ours
        except OSError:
            return False  # Dagster's own way then says what is wrong with the folder
        finally:
            if scratch is not None:
                with suppress(FileNotFoundError):
                    os.unlink(scratch)
        return True

    def release_connections(self) -> None:
        """Close every kept connection (the engines stay, and connect again when used)."""
        with self._db_lock:
            for engine in self._engines.values():
                engine.dispose()

    def wipe(self) -> None:
        self.release_connections()  # the run databases are about to be deleted
        self._tables_found.clear()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self.release_connections()
        with self._db_lock:
            self._engines.clear()


class KeptEngineRunStorage(SqliteRunStorage):
    """SqliteRunStorage with its one engine, and its connections, kept."""

    def __init__(self, conn_string: str, inst_data=None):
        super().__init__(conn_string, inst_data)
        self._engine = _kept_engine(conn_string)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def release_connections(self) -> None:
        """Close the kept connections (the engine connects again when used)."""
        self._engine.dispose()

    def dispose(self) -> None:
        super().dispose()
        self.release_connections()


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


def prepare_for_fork(instance) -> None:
    """What the fork server does once it has opened the instance, before it forks the workers:
    make the run-database template, then close every connection. Nothing for an instance of
    other storages."""
    try:
        if isinstance(instance.event_log_storage, KeptEngineEventLogStorage):
            instance.event_log_storage.prepare_run_template()
    finally:
        release_connections(instance)


def release_connections(instance) -> None:
    """Close the connections kept by the instance's storages, as a worker does after each run:
    they serve the run's many transactions, and closing them after it lets SQLite fold each
    database's journal back in, as Dagster's own storage leaves them."""
    for storage in (instance.event_log_storage, instance.run_storage):
        if isinstance(storage, KeptEngineEventLogStorage | KeptEngineRunStorage):
            storage.release_connections()


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
