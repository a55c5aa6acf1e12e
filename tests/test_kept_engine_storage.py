"""The workers' SQLite storage with kept engines writes what Dagster's own storage reads.

A worker of `factory run` opens the local instance through factory_assets/sqlite_storage.py; the
UI, the daemon and every other command open the same files with Dagster's SqliteStorage. Both are
real instances on one temporary DAGSTER_HOME here, taking turns.
"""

import multiprocessing
import os
import shutil
import sqlite3
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from factory.services.dagster_home import INSTANCE_CONFIG, names_storage
from factory_assets.sqlite_storage import (
    MAX_ENGINES,
    KeptEngineEventLogStorage,
    KeptEngineRunStorage,
    kept_engine_overrides,
    prepare_for_fork,
    release_connections,
)

PARTS = dg.DynamicPartitionsDefinition(name="kept_engine_parts")


@dg.asset(partitions_def=PARTS)
def part_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"partition": context.partition_key})


JOB = dg.define_asset_job("kept_engine_job", selection=[part_asset], partitions_def=PARTS)
DEFS = dg.Definitions(assets=[part_asset], jobs=[JOB])


@pytest.fixture
def home(tmp_path) -> Path:
    shutil.copyfile(INSTANCE_CONFIG, tmp_path / "dagster.yaml")
    return tmp_path


def kept(home: Path) -> dg.DagsterInstance:
    ref = InstanceRef.from_dir(str(home), overrides=kept_engine_overrides(str(home)))
    return dg.DagsterInstance.from_ref(ref)


def stock(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def materialize(instance: dg.DagsterInstance, key: str) -> str:
    result = DEFS.resolve_job_def(JOB.name).execute_in_process(instance=instance, partition_key=key)
    assert result.success
    return result.run_id


def test_runs_written_with_kept_engines_read_by_dagsters_storage_and_back(home):
    with kept(home) as worker, stock(home) as ui:
        assert isinstance(worker.event_log_storage, KeptEngineEventLogStorage)
        assert isinstance(worker.run_storage, KeptEngineRunStorage)
        assert not isinstance(ui.event_log_storage, KeptEngineEventLogStorage)
        worker.add_dynamic_partitions(PARTS.name, ["a", "b"])
        assert set(ui.get_dynamic_partitions(PARTS.name)) == {"a", "b"}

        # Taking turns on the same files: each sees the other's runs, events and assets.
        first = materialize(worker, "a")
        second = materialize(ui, "b")
        third = materialize(worker, "a")
        for reader in (worker, ui):
            runs = {run.run_id: run for run in reader.get_runs()}
            assert set(runs) == {first, second, third}
            assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs.values())
            assert reader.get_materialized_partitions(part_asset.key) == {"a", "b"}
            latest = reader.get_latest_materialization_event(part_asset.key)
            assert latest.run_id == third
            for run_id in runs:
                logs = reader.all_logs(run_id)
                assert any(e.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS for e in logs)
        assert len(worker.all_logs(first)) == len(ui.all_logs(first))


def test_engines_are_kept_per_database_and_bounded(home):
    with kept(home) as worker:
        worker.add_dynamic_partitions(PARTS.name, ["a"])
        storage = worker.event_log_storage
        run_id = materialize(worker, "a")
        engine = storage._engines[run_id]
        worker.all_logs(run_id)
        assert storage._engines[run_id] is engine  # the same engine, not a new one per call
        for _ in range(MAX_ENGINES + 2):
            materialize(worker, "a")
        assert len(storage._engines) <= MAX_ENGINES
        assert run_id not in storage._engines
        # A database whose engine was let go is opened again when read.
        assert any(
            e.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS for e in worker.all_logs(run_id)
        )


def _database_shape(path: Path) -> tuple:
    with sqlite3.connect(path) as db:
        return (
            sorted(db.execute("SELECT type, name, sql FROM sqlite_master").fetchall(), key=str),
            db.execute("SELECT version_num FROM alembic_version").fetchall(),
            db.execute("PRAGMA journal_mode").fetchone(),
            db.execute("PRAGMA integrity_check").fetchone(),
        )


def _run_databases(home: Path) -> dict[str, Path]:
    return {p.stem: p for p in (home / "history" / "runs").glob("*.db") if p.stem != "index"}


def test_a_run_database_from_the_template_is_the_one_dagster_makes(home):
    with stock(home) as ui:
        ui.add_dynamic_partitions(PARTS.name, ["a"])
        made_by_dagster = materialize(ui, "a")
    with kept(home) as worker:
        prepare_for_fork(worker)
        copied = materialize(worker, "a")
        release_connections(worker)
    runs = _run_databases(home)
    assert _database_shape(runs[copied]) == _database_shape(runs[made_by_dagster])
    assert _database_shape(runs[copied])[3] == ("ok",)
    # Complete under its name: no scratch copy is left beside it.
    scratch = [p.name for p in (home / "history" / "runs").iterdir() if p.name.startswith(".")]
    assert scratch == []
    assert set(runs) == {made_by_dagster, copied}
    with stock(home) as ui:
        logs = ui.all_logs(copied)
        assert any(e.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS for e in logs)
        assert ui.get_run_by_id(copied).status == dg.DagsterRunStatus.SUCCESS


def test_a_run_database_that_exists_is_not_replaced_by_the_template(home):
    with kept(home) as worker:
        worker.add_dynamic_partitions(PARTS.name, ["a"])
        prepare_for_fork(worker)
        run_id = materialize(worker, "a")
        events = len(worker.all_logs(run_id))
        storage = worker.event_log_storage
        storage._initialized_dbs.discard(run_id)  # as a new worker would find it
        assert storage._copy_template(run_id) is False
        assert len(worker.all_logs(run_id)) == events


def _connections_after_fork(home: str, results) -> None:
    # In a forked child of a process that prepared its instance for the fork: no database file
    # may be open, and the instance works.
    from factory_assets.launcher import worker_instance

    opened = [
        os.readlink(f"/proc/self/fd/{fd}")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    ]
    instance = worker_instance()
    results.put(([p for p in opened if p.startswith(home)], len(instance.get_runs())))


def test_a_forked_worker_inherits_no_database_connection(home, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    from factory_assets import launcher

    monkeypatch.setattr(launcher, "_WORKER_INSTANCE", None)
    instance = launcher.worker_instance()
    instance.add_dynamic_partitions(PARTS.name, ["a"])
    materialize(instance, "a")
    prepare_for_fork(instance)
    fork = multiprocessing.get_context("fork")
    results = fork.Queue()
    child = fork.Process(target=_connections_after_fork, args=(str(home), results))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert results.get(timeout=5) == ([], 1)


def _open_as_a_worker(home: str, results) -> None:
    os.environ["DAGSTER_HOME"] = home
    try:
        from factory_assets.launcher import worker_instance

        worker_instance()
        results.put("ok")
    except Exception as exc:  # the test reports what each process saw
        results.put(f"{type(exc).__name__}: {exc}"[:300])


def test_workers_opening_a_new_home_at_once_take_turns(tmp_path):
    # `factory run` starts its workers together, and each opens the instance as it starts: on a
    # new DAGSTER_HOME two first opens at once would create and stamp the databases twice.
    spawn = multiprocessing.get_context("spawn")
    for attempt in range(2):
        home = tmp_path / f"home{attempt}"
        home.mkdir()
        shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
        results = spawn.Queue()
        workers = [
            spawn.Process(target=_open_as_a_worker, args=(str(home), results)) for _ in range(3)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert [results.get(timeout=5) for _ in workers] == ["ok"] * 3
        with stock(home) as instance:
            assert instance.get_runs() == []


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ("telemetry:\n  enabled: false\n", False),
        ("storage:\n  postgres:\n    postgres_url: postgresql://h/db\n", True),
        ("event_log_storage:\n  module: m\n  class: C\n", True),
        ("run_storage:\n  module: m\n  class: C\n", True),
        ("[not, a, mapping]\n", False),
        ("storage: [unclosed\n", False),
    ],
)
def test_an_instance_that_names_its_storage_is_the_operators(tmp_path, config, names):
    path = tmp_path / "dagster.yaml"
    path.write_text(config)
    assert names_storage(path) is names
    assert names_storage(tmp_path / "missing.yaml") is False


def test_a_template_that_cannot_be_put_in_place_leaves_the_database_to_dagster(home):
    with kept(home) as worker:
        prepare_for_fork(worker)
        storage = worker.event_log_storage
        storage._base_dir = str(home / "no-such-folder")
        assert storage._copy_template("a-new-run") is False
        assert not (home / "no-such-folder").exists()


def test_a_table_found_is_remembered_and_one_not_found_is_asked_again(home, monkeypatch):
    with kept(home) as worker:
        storage = worker.event_log_storage
        asked = []
        parent = SqliteEventLogStorage.has_table

        def counted(self, table_name):
            asked.append(table_name)
            return parent(self, table_name)

        monkeypatch.setattr(SqliteEventLogStorage, "has_table", counted)
        worker.add_dynamic_partitions(PARTS.name, ["a"])
        for _ in range(3):
            assert worker.has_dynamic_partition(PARTS.name, "a")
        assert storage.has_table("dynamic_partitions")
        assert asked.count("dynamic_partitions") == 1, asked
        # A partition query with an index transaction open: no deadlock on the storage's lock.
        materialize(worker, "a")

        assert not storage.has_table("made_later")
        with sqlite3.connect(Path(storage.path_for_shard("index"))) as conn:
            conn.execute("CREATE TABLE made_later (id INTEGER)")
        assert storage.has_table("made_later")
        assert asked.count("made_later") == 2
