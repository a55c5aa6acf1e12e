"""Executor loss: a run whose worker process dies mid-build is failed, retried, and recorded once.

A temp DAGSTER_HOME gets the project's dagster.yaml (run monitoring, run retries with
`retry_on_asset_or_op_failure: false`; only the polling intervals are shortened here), and
`dagster-daemon` serves the project's own workspace.yaml with the queued run coordinator and the
default run launcher. One run of `build_linux_amd64` is submitted with `dagster job launch`; its
chain step builds a fragment that sleeps, and while it does, the test kills that run's worker
process (SIGKILL, by the PID the worker reported in its own "Started process for run" event).

Who notices: with the DefaultRunLauncher, Dagster's run monitoring daemon cannot. In 1.13.27
`DefaultRunLauncher.supports_check_run_worker_health` is False (launcher/base.py), so
`monitor_started_run` only enforces max runtime. The worker is a `multiprocessing` child of the
code server that `dagster-daemon` runs, and that server's cleanup thread
(`DagsterApiServer._check_for_orphaned_runs`, every 0.5 s) sees the dead process and reports the
run failed, with no step-failure reason. `run_retries` then launches a new run re-executed from
the failure (tag `dagster/parent_run_id`), which the `retry_on_asset_or_op_failure: false` rule
allows. On Kubernetes the K8sRunLauncher does support worker health checks: there run monitoring
is what notices a lost worker pod.

What must hold: the run is failed, one retry run is launched and succeeds, and the record store
holds exactly one record for the combination, complete and verified, and nothing of the killed
attempt (no record, error file, evidence or temp file).

The combination is one step (the chain). The multiprocess executor runs it in a child of the
run worker, and a child left running would finish the chain and write a record beside the
retry's; the step arms `PR_SET_PDEATHSIG` (factory/build/step_guard.py), so it dies with its worker.
The test checks that the step processes are gone and that the killed run logged no step success
after it was failed. The record names the retry: the run that finished the attempt.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest
import yaml

from factory.records.model import CompatibilityRecord
from factory.records.store import LAYOUT, LocalRecordStore
from factory.services import embedded as local_services
from factory.services import server_process
from factory.services.dagster_home import INSTANCE_CONFIG
from factory.settings import PROJECT_ROOT
from factory.supply_chain.verify import verify_build
from factory_assets.partitions import partitions_name
from factory_assets.pools import apply_pool_limits
from tests.integration.stores import example_store_copy, manifest
from tests.integration.webhook_receiver import webhook_receiver
from tests.process_tree import alive, children, cmdline, parent_pid

pytestmark = pytest.mark.integration

MANIFEST_ID = "executor_loss"
SLUG = "linux_amd64"
JOB = f"build_{SLUG}"
CHAIN_STEP = f"{SLUG}__chain"
SLEEP_S = 8
# The step is well into its `sleep` when the worker dies, not still setting up.
KILL_AFTER_STEP_START_S = 2.0
DEADLINE_S = 300
WORKSPACE = PROJECT_ROOT / "workspace.yaml"
PARENT_RUN_TAG = "dagster/parent_run_id"
# The code location's sensors that submit build runs; they start RUNNING by default and would
# submit a run of their own for the new manifest beside the one this test launches.
BUILD_SENSORS = ("manifest_change_sensor", "base_digest_sensor")


def _instance_config() -> str:
    """The project's dagster.yaml with shorter polling, so the test waits seconds, not minutes."""
    config = yaml.safe_load(INSTANCE_CONFIG.read_text())
    assert config["run_retries"]["enabled"] and config["run_retries"]["max_retries"] >= 1
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False
    config["run_monitoring"]["poll_interval_seconds"] = 2
    config["run_coordinator"]["config"] = {"dequeue_interval_seconds": 1}
    return yaml.safe_dump(config, sort_keys=False)


def _dagster(env: dict[str, str], *args: str) -> None:
    """Run Dagster's own CLI against the project's workspace, as an operator would."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), *args, "-w", str(WORKSPACE)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"dagster {' '.join(args)} failed:\n{done.stderr[-4000:]}"


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = parent_pid(pid)
    return False


class Daemon:
    """`dagster-daemon run` on the project's workspace, in a session of its own."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.process = server_process.spawn(
            [Path(sys.executable).with_name("dagster-daemon"), "run", "-w", WORKSPACE],
            log_path,
            env=env,
            cwd=PROJECT_ROOT,
        )

    def stop(self) -> None:
        # Only what this test started: the daemon and the processes of its session.
        server_process.stop(self.process)


def _wait_for(what: str, daemon: Daemon, check, deadline: float):
    """`check()`'s first true value, failing if the daemon exits or `deadline` passes first."""
    return server_process.wait_until(
        what,
        check,
        [daemon.process],
        lambda: [daemon.log_path],
        timeout_s=deadline - time.monotonic(),
        poll_s=0.25,
    )


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The PID the run worker reported in its own "Started process for run" engine event."""
    for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = event.dagster_event.engine_event_data if event.dagster_event else None
        if data and "pid" in data.metadata and event.message.startswith("Started process for run"):
            return int(data.metadata["pid"].value)
    return None


def _step_started(instance: dg.DagsterInstance, run_id: str, step_key: str) -> float | None:
    for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START):
        if event.step_key == step_key:
            return event.timestamp
    return None


@dataclass
class Loss:
    """What happened, read back from the instance and the record store once the retry ended."""

    killed: dg.DagsterRun
    retry: dg.DagsterRun
    runs: list[dg.DagsterRun]
    killed_messages: list[str]
    retry_steps: set[str]
    late_steps: list[str]  # steps of the killed run that finished after it was marked failed
    worker_pid: int
    worker_cmdline: str
    step_pids: list[int]
    orphans_alive: list[int]  # step processes still running once the run was marked failed
    records: list[CompatibilityRecord]
    store: LocalRecordStore
    timings: dict[str, float] = field(default_factory=dict)
    alerts: list[dict] = field(default_factory=list)  # what the webhook received


def _start(services, tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """DAGSTER_HOME, the environment and the data dir; a store whose build sleeps."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(_instance_config())
    # A fresh salt: the sleeping layer is never in the build cache, so the step really builds.
    store = example_store_copy(
        tmp_path,
        {MANIFEST_ID: manifest(fragments={"security": "0.1.0", "core": "0.1.0", "slow": "0.1.0"})},
        modules={"slow": {"0.1.0": {"path": "modules/slow/0.1.0.Dockerfile"}}},
        files={
            "modules/slow/0.1.0.Dockerfile": (
                f"RUN echo 'salt {uuid.uuid4().hex}' && sleep {SLEEP_S}\n"
            )
        },
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FACTORY_MANIFEST_STORE": str(store),
        "FACTORY_DATA_DIR": str(tmp_path / "data"),
        # The engine was found under the session's data dir; name it, since the data dir moved.
        "DOCKER_HOST": local_services.docker_host(services),
        "FACTORY_REGISTRY": services.registry,
    }
    with dg.DagsterInstance.from_config(str(home)) as instance:
        apply_pool_limits(instance)
        instance.add_dynamic_partitions(partitions_name(SLUG), [MANIFEST_ID])
    for sensor in BUILD_SENSORS:
        _dagster(env, "sensor", "stop", sensor)
    return home, env, tmp_path / "data"


@pytest.fixture(scope="module")
def loss(services, tmp_path_factory) -> Loss:
    """Launch one run, kill its worker mid-image-step, and wait for the retry to end."""
    tmp_path = tmp_path_factory.mktemp("executor_loss")
    home, env, data_dir = _start(services, tmp_path)
    with webhook_receiver() as receiver:
        env = {**env, "FACTORY_ALERT_WEBHOOK_URL": receiver.url, "FACTORY_ALERT_INTERVAL_S": "2"}
        daemon = Daemon(env, tmp_path / "daemon.log")
        try:
            outcome = _kill_and_recover(home, env, data_dir, daemon)
            receiver.wait_for("executor_lost", timeout_s=60)
            time.sleep(5)  # two more sensor ticks: a second alert would arrive by now
            outcome.alerts = list(receiver.bodies)
        finally:
            daemon.stop()
    _report(outcome)
    return outcome


def _report(loss: Loss) -> None:
    """The timings and what the killed run's orphaned step did (shown with `pytest -s`)."""
    run_ids = [r.dagster.run_id for r in loss.records]
    sys.stderr.write(
        "\nexecutor loss: "
        + ", ".join(f"{name} at {seconds:.1f}s" for name, seconds in loss.timings.items())
        + f"; worker PID {loss.worker_pid} ({loss.worker_cmdline!r}), its step processes "
        f"{loss.step_pids}; "
        f"steps of the killed run that finished after it was failed: {loss.late_steps}; "
        f"retry re-ran {sorted(loss.retry_steps)}; record run_id {run_ids} "
        f"(killed {loss.killed.run_id}, retry {loss.retry.run_id})\n"
    )


def _kill_and_recover(home: Path, env: dict[str, str], data_dir: Path, daemon: Daemon) -> Loss:
    t0 = time.monotonic()
    deadline = t0 + DEADLINE_S
    _dagster(
        env, "job", "launch", "-j", JOB, "--tags", json.dumps({"dagster/partition": MANIFEST_ID})
    )
    timings = {"submitted": time.monotonic() - t0}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [first] = instance.get_runs()
        run_id = first.run_id

        # The worker is in the middle of the chain step: it started it and is building the sleep.
        _wait_for(
            "the chain step to start",
            daemon,
            lambda: _step_started(instance, run_id, CHAIN_STEP),
            deadline,
        )
        timings["chain_step_started"] = time.monotonic() - t0
        time.sleep(KILL_AFTER_STEP_START_S)
        pid = _worker_pid(instance, run_id)
        assert pid is not None, "the run worker reported no PID"
        # Kill exactly that process, and only after checking it is ours: a descendant of the
        # daemon this test started (daemon -> code server -> run worker).
        assert _descends_from(pid, daemon.process.pid), f"PID {pid} is not under our daemon"
        step_pids = children(pid)
        command = cmdline(pid)
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        ended = instance.all_logs(
            run_id,
            of_type={dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE},
        )
        assert CHAIN_STEP not in {e.step_key for e in ended}, "the chain step ended too soon"
        os.kill(pid, signal.SIGKILL)
        timings["killed"] = time.monotonic() - t0

        _wait_for(
            "the run to be marked failed",
            daemon,
            lambda: instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE,
            deadline,
        )
        timings["marked_failed"] = time.monotonic() - t0
        orphans_alive = [p for p in step_pids if alive(p)]
        retry = _wait_for(
            "a retry run",
            daemon,
            lambda: next(
                (r for r in instance.get_runs() if r.tags.get(PARENT_RUN_TAG) == run_id), None
            ),
            deadline,
        )
        timings["retry_created"] = time.monotonic() - t0
        _wait_for(
            "the retry to finish",
            daemon,
            lambda: instance.get_run_by_id(retry.run_id).is_finished,
            deadline,
        )
        timings["retry_finished"] = time.monotonic() - t0

        events = instance.all_logs(run_id)
        [failed_at] = [
            e.timestamp
            for e in events
            if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE
        ]
        store = LocalRecordStore(data_dir)
        return Loss(
            killed=instance.get_run_by_id(run_id),
            retry=instance.get_run_by_id(retry.run_id),
            runs=list(instance.get_runs()),
            killed_messages=[e.message for e in events if e.dagster_event],
            retry_steps={
                e.step_key
                for e in instance.all_logs(retry.run_id, of_type=dg.DagsterEventType.STEP_START)
            },
            late_steps=[
                e.step_key
                for e in events
                if e.timestamp > failed_at
                and e.dagster_event
                and e.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS
            ],
            worker_pid=pid,
            worker_cmdline=command,
            step_pids=step_pids,
            orphans_alive=orphans_alive,
            records=list(store.records()),
            store=store,
            timings=timings,
        )


def test_the_killed_run_is_marked_failed_as_a_lost_worker(loss):
    assert loss.killed.status == dg.DagsterRunStatus.FAILURE
    # Reported by the code server that spawned the worker, not as a step failure, so run
    # retries (retry_on_asset_or_op_failure: false) still apply.
    crash = f"Run execution process for {loss.killed.run_id} was terminated by signal 9 (SIGKILL)"
    assert any(crash in message for message in loss.killed_messages), loss.killed_messages
    assert loss.killed.tags.get("dagster/failure_reason") != "STEP_FAILURE"
    assert loss.killed.tags["dagster/will_retry"] == "true"
    assert loss.timings["marked_failed"] - loss.timings["killed"] < 10


def test_one_retry_is_launched_and_succeeds(loss):
    assert [r.run_id for r in loss.runs if r.run_id != loss.killed.run_id] == [loss.retry.run_id]
    assert loss.retry.status == dg.DagsterRunStatus.SUCCESS
    assert loss.retry.tags[PARENT_RUN_TAG] == loss.killed.run_id
    assert loss.retry.tags["dagster/retry_number"] == "1"
    assert loss.retry.tags["dagster/partition"] == MANIFEST_ID
    # Re-executed from the failure: the step that was lost and everything after it.
    assert loss.retry_steps == {CHAIN_STEP}


def test_the_lost_workers_step_died_with_it(loss):
    """No orphan: the step processes are gone and finished nothing after the run failed."""
    assert loss.step_pids, "the run worker had no step process when it was killed"
    assert loss.orphans_alive == []
    assert loss.late_steps == []


def test_the_combination_has_exactly_one_complete_record(loss):
    [record] = loss.records
    assert (record.manifest_id, record.platform, record.status, record.dagster.partition) == (
        MANIFEST_ID,
        "linux/amd64",
        "pass",
        MANIFEST_ID,
    )
    assert verify_build(record.build_id, loss.store).ok
    # Nothing of the killed attempt: no error file, dead letter, stray evidence or temp file.
    for kind in LAYOUT:
        assert set(loss.store.list_ids(kind)) <= {record.build_id}, kind
    assert loss.store.list_ids("error") == [] and loss.store.list_ids("dlq") == []
    assert list(loss.store.root.rglob(".tmp-*")) == []


def test_the_record_names_the_run_that_finished_it(loss):
    [record] = loss.records
    assert record.dagster.run_id == loss.retry.run_id


def test_lost_executor_alerts_once(loss: Loss):
    [alert] = loss.alerts
    assert alert["kind"] == "executor_lost"
    assert (alert["manifest"], alert["platform"], alert["pool"]) == (
        MANIFEST_ID,
        "linux/amd64",
        "amd64",
    )
    assert alert["details"]["run_id"] == loss.killed.run_id
    assert loss.killed.run_id in alert["text"]
