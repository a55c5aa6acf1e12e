"""The workers' compute log manager writes what Dagster's own manager (the UI's) reads, and
starts no echo process.

Real instances on a temporary DAGSTER_HOME: one opened as `factory run`'s workers open it
(factory_assets/launcher.py), one with Dagster's LocalComputeLogManager for comparison. Each run
is executed in a process of its own (this module run as a script), whose stdout and stderr are
file descriptors 1 and 2 as in a worker, not pytest's capture.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef, compute_logs_directory
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

from factory.services.dagster_home import INSTANCE_CONFIG
from factory.settings import PROJECT_ROOT
from factory_assets import launcher
from factory_assets.compute_logs import FileCapturedComputeLogManager
from tests.process_tree import cmdline, descendants

ECHO_COMMANDS = ("tail", "watch_orphans")
SEEN: dict[str, list[str]] = {}


@dg.op
def talkative_op() -> None:
    print("from python, to stdout", flush=True)  # noqa: T201  (what a step prints)
    print("from python, to stderr", file=sys.stderr, flush=True)  # noqa: T201
    subprocess.run(["sh", "-c", "echo from a child process"], check=True)
    SEEN["processes"] = [cmdline(pid) for pid in descendants(os.getpid())]


@dg.job
def talkative_job() -> None:
    talkative_op()


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_bytes(INSTANCE_CONFIG.read_bytes())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    SEEN.clear()
    return home


def _run(instance: dg.DagsterInstance) -> tuple[list[str], list[str]]:
    """Execute the job; (its step's log key, the processes under the step)."""
    result = talkative_job.execute_in_process(instance=instance)
    assert result.success
    [captured] = [
        event.logs_captured_data
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.LOGS_CAPTURED
    ]
    log_key = instance.compute_log_manager.build_log_key_for_run(result.run_id, captured.file_key)
    return log_key, SEEN["processes"]


def _open(manager: str) -> dg.DagsterInstance:
    if manager == "workers":
        return launcher._open_instance()
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(os.environ["DAGSTER_HOME"]))


def _run_in_a_process(manager: str) -> dict:
    """`manager`: "workers" (the instance as `factory run`'s workers open it) or "dagster"."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.test_file_captured_compute_logs", manager],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *printed, findings = done.stdout.strip().splitlines()
    return {**json.loads(findings), "printed": "\n".join(printed)}


def _echo_processes(processes: list[str]) -> list[str]:
    return [p for p in processes if any(name in p for name in ECHO_COMMANDS)]


def test_what_the_workers_capture_is_read_back_by_dagsters_own_manager(dagster_home):
    seen = _run_in_a_process("workers")
    assert seen["manager"] == FileCapturedComputeLogManager.__name__
    assert _echo_processes(seen["processes"]) == [], seen["processes"]
    assert seen["printed"] == "", "the step's output reached the process's own output"
    reader = LocalComputeLogManager(compute_logs_directory(str(dagster_home)))
    log_key = seen["log_key"]
    stdout = reader.get_log_data(log_key).stdout.decode()
    stderr = reader.get_log_data(log_key).stderr.decode()
    assert "from python, to stdout" in stdout
    assert "from a child process" in stdout
    assert "from python, to stderr" in stderr
    assert reader.is_capture_complete(log_key)


def test_dagsters_own_manager_starts_the_echo_processes(dagster_home):
    """The check above can fail: with Dagster's manager the same step has its echo processes."""
    seen = _run_in_a_process("dagster")
    assert seen["manager"] == LocalComputeLogManager.__name__
    assert _echo_processes(seen["processes"]), seen["processes"]


def test_a_compute_log_manager_named_in_dagster_yaml_is_kept(dagster_home):
    config = dagster_home / "dagster.yaml"
    logs = dagster_home / "own_logs"
    config.write_text(
        config.read_text()
        + "\ncompute_logs:\n  module: dagster.core.storage.noop_compute_log_manager\n"
        + "  class: NoOpComputeLogManager\n"
    )
    instance = launcher._open_instance()
    try:
        assert type(instance.compute_log_manager).__name__ == "NoOpComputeLogManager"
    finally:
        instance.dispose()
    assert not logs.exists()


if __name__ == "__main__":
    # One run, as a worker runs it; its findings as the last line of stdout (JSON).
    opened = _open(sys.argv[1])
    try:
        key, processes = _run(opened)
        manager = type(opened.compute_log_manager).__name__
    finally:
        opened.dispose()
    sys.stdout.write(json.dumps({"manager": manager, "log_key": key, "processes": processes}))
    sys.stdout.write("\n")
