"""The Kubernetes assumption, on real parts: a combination's step needs no disk but its own.

A "launcher" process (the code server, the daemon's K8sRunLauncher, `isolated_launch.py`) creates
the run of one combination in a Dagster instance on PostgreSQL. A second process, the pod, executes
it with the command Kubernetes would start, in one of the two shapes of docs/deploy.md:

- run pod (`FACTORY_EXECUTOR=in_process`, deploy/helm/values.yaml's default): `dagster api
  execute_run`, as K8sRunLauncher starts a run pod; the run worker executes the chain step itself;
- step pod (`FACTORY_EXECUTOR=k8s`): `dagster api execute_step` for the chain step, as
  k8s_job_executor starts a step pod.

Each process has its own HOME, cwd, TMPDIR, DAGSTER_HOME, FACTORY_DATA_DIR and manifest store copy
(the one baked into the image); what they share is what pods share: the registry, PostgreSQL, the
S3 bucket (moto's server), the code, and a Docker Engine (the node's, used only by the pod).

Then: the run's result is in PostgreSQL, the record, evidence, SBOM and provenance are in S3 and
verify, each of the chain's assets is materialized for that partition by that run, the launcher
wrote nothing to its data dir, and no step output was handled by an IO manager (no HANDLED_OUTPUT
event, no `storage/` folder in either DAGSTER_HOME, no pickle anywhere in either process's
folders). A passing combination runs in the run-pod shape; a failing one (a test suite that exits
3) in the step-pod shape records `fail` and materializes only the assets before `test_report`.
"""

import json
import os
import pickletools
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEventType

from factory.platforms import BY_NAME
from factory.records.model import CompatibilityRecord
from factory.records.s3_store import S3RecordStore
from factory.services.embedded import docker_host
from factory.settings import PROJECT_ROOT
from factory.supply_chain.verify import verify_build
from factory_assets.platform_chain import ASSET_NAMES, chain_step_name
from tests.integration.postgres_server import (
    PRODUCTION_SECTIONS,
    PostgresServer,
    postgres_server,
    write_production_instance,
)
from tests.integration.s3_server import REGION, S3Server
from tests.integration.stores import example_store_copy, manifest

pytestmark = pytest.mark.integration
AMD64 = BY_NAME["linux/amd64"]
PREFIX = "factory"
COMPUTE_LOG_PREFIX = "dagster/compute-logs"
PROCESS_TIMEOUT_S = 300
FAILING_SUITE = {"path": "tests/always_fails.sh", "timeout_s": 60}
FAILING_SCRIPT = 'echo "isolation: failing on purpose for $FACTORY_MANIFEST_ID"\nexit 3\n'
# shape -> (FACTORY_EXECUTOR, the launcher output naming the pod's command)
SHAPES = {"run_pod": ("in_process", "run_args"), "step_pod": ("k8s", "step_args")}


@pytest.fixture(scope="module")
def servers(s3) -> tuple[PostgresServer, S3Server]:
    with postgres_server() as pg:
        yield pg, s3


class Side:
    """One process's own folders: HOME, cwd, TMPDIR, DAGSTER_HOME, data dir, manifest store."""

    def __init__(self, root: Path, manifests: dict) -> None:
        self.root = root
        self.home, self.cwd, self.tmp = root / "home", root / "cwd", root / "tmp"
        self.dagster_home, self.data_dir = root / "dagster_home", root / "data"
        for folder in (self.home, self.cwd, self.tmp, self.dagster_home, self.data_dir):
            folder.mkdir(parents=True)
        self.store = example_store_copy(
            root,
            manifests,
            files={FAILING_SUITE["path"]: FAILING_SCRIPT},
            suites={"always_fails": FAILING_SUITE},
        )

    def env(self, shared: dict[str, str]) -> dict[str, str]:
        return {
            "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(PROJECT_ROOT),  # the code, as baked into the image
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "DAGSTER_HOME": str(self.dagster_home),
            "FACTORY_DATA_DIR": str(self.data_dir),
            "FACTORY_MANIFEST_STORE": str(self.store),
            **shared,
        }


def _write_instance(side: Side, s3: S3Server, bucket: str) -> None:
    """deploy/dagster.yaml's sections, step logs to S3 like production (moto's endpoint added)."""
    path = write_production_instance(side.dagster_home, (*PRODUCTION_SECTIONS, "compute_logs"))
    config = yaml.safe_load(path.read_text())
    assert config["compute_logs"]["class"] == "S3ComputeLogManager"
    config["compute_logs"]["config"]["endpoint_url"] = s3.endpoint_url
    path.write_text(yaml.safe_dump(config))


def _shared_env(
    pg: PostgresServer, s3: S3Server, bucket: str, registry: str, executor: str
) -> dict[str, str]:
    return {
        **pg.dagster_env(),
        # The shape, as the Helm values' user deployment env sets it for every pod.
        "FACTORY_EXECUTOR": executor,
        "FACTORY_REGISTRY": registry,
        **s3.record_store_env(bucket, PREFIX),
        "AWS_DEFAULT_REGION": REGION,
    }


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _is_pickle(path: Path) -> bool:
    data = path.read_bytes()
    if not data.startswith(b"\x80"):  # every pickle protocol >= 2 starts with PROTO
        return False
    try:
        with open(os.devnull, "w") as sink:
            pickletools.dis(data, out=sink)
    except Exception:  # not a well-formed pickle stream
        return False
    return True


def run_isolated(
    tmp_path: Path, servers, services, shape: str, manifest_id: str, manifests: dict
) -> dict:
    """Launch one amd64 combination from one process and execute it in a pod-like process of the
    shape `shape`; return what the test asserts on."""
    pg, s3 = servers
    executor, command = SHAPES[shape]
    bucket = s3.new_bucket()
    launcher = Side(tmp_path / "launcher", manifests)
    pod = Side(tmp_path / shape, manifests)
    for side in (launcher, pod):
        _write_instance(side, s3, bucket)
    shared = _shared_env(pg, s3, bucket, services.registry, executor)
    before = {side.root: set(_files(side.root)) for side in (launcher, pod)}

    # The launcher has no Docker Engine: its data dir holds none, and DOCKER_HOST is not set.
    launched = subprocess.run(
        [sys.executable, "-m", "tests.integration.isolated_launch", manifest_id, AMD64.name],
        cwd=launcher.cwd,
        env=launcher.env(shared),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert launched.returncode == 0, launched.stderr[-4000:]
    launch = json.loads(launched.stdout.strip().splitlines()[-1])
    args = launch[command]
    assert args[:3] == ["dagster", "api", "execute_run" if shape == "run_pod" else "execute_step"]
    if shape == "run_pod":
        # The run carries its platform's placement: K8sRunLauncher reads it for the run pod.
        placement = json.loads(launch["tags"]["dagster-k8s/config"])
        assert placement["pod_spec_config"]["node_selector"] == {"kubernetes.io/arch": "amd64"}
    else:
        # The step pod is placed by op tags; the run pod that waits on it stays small.
        assert "dagster-k8s/config" not in launch["tags"]

    # The pod: the node's engine, and nothing else of the launcher's.
    executed = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), *args[1:]],
        cwd=pod.cwd,
        env=pod.env({**shared, "DOCKER_HOST": docker_host(services)}),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    written = {side.root: set(_files(side.root)) - before[side.root] for side in (launcher, pod)}
    return {
        "run_id": launch["run_id"],
        "bucket": bucket,
        "launcher": launcher,
        "pod": pod,
        "executed": executed,
        "written": written,
    }


def _instance(pg: PostgresServer, home: Path, monkeypatch) -> dg.DagsterInstance:
    """The same PostgreSQL instance, opened from the test to read what the processes wrote."""
    for name, value in pg.dagster_env().items():
        monkeypatch.setenv(name, value)
    return dg.DagsterInstance.from_config(str(home))


def _materialized(instance: dg.DagsterInstance, manifest_id: str) -> dict[str, str]:
    """asset name -> run id of its materializations for this partition."""
    runs = {}
    for name in ASSET_NAMES:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey([AMD64.slug, name]), asset_partitions=[manifest_id]
            ),
            limit=10,
        )
        for record in result.records:
            assert name not in runs, f"{name} materialized twice for {manifest_id}"
            runs[name] = record.run_id
    return runs


def _assert_isolated(outcome: dict, instance: dg.DagsterInstance) -> None:
    launcher, pod = outcome["launcher"], outcome["pod"]
    # The launcher wrote nothing where a build would write: not a record, not a staged script.
    assert list(launcher.data_dir.iterdir()) == []
    assert outcome["written"][launcher.root] == set(), "the launcher wrote files"
    # No IO manager handled an output: nothing to pickle, nothing another pod would need.
    assert (
        instance.get_records_for_run(
            outcome["run_id"], of_type=DagsterEventType.HANDLED_OUTPUT
        ).records
        == []
    )
    for side in (launcher, pod):
        assert not (side.dagster_home / "storage").exists(), side.root
        pickles = [p for p in outcome["written"][side.root] if _is_pickle(p)]
        assert pickles == [], pickles
    # The pod's data dir holds only the scripts it staged for its test containers.
    assert [p.name for p in pod.data_dir.iterdir()] == ["work"]


def test_one_combination_runs_in_a_process_that_shares_no_disk(
    servers, services, tmp_path, monkeypatch
):
    pg, s3 = servers
    outcome = run_isolated(
        tmp_path, servers, services, "run_pod", "isolated_pass", {"isolated_pass": manifest()}
    )
    executed = outcome["executed"]
    assert executed.returncode == 0, (executed.stdout + executed.stderr)[-6000:]
    run_id = outcome["run_id"]

    with _instance(pg, outcome["launcher"].dagster_home, monkeypatch) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == "isolated_pass"
        # One step: the whole chain, in the run pod itself.
        steps = {
            r.event_log_entry.step_key
            for r in instance.get_records_for_run(
                run_id, of_type=DagsterEventType.STEP_SUCCESS
            ).records
        }
        assert steps == {chain_step_name(AMD64)}
        # In the run pod's own process: no step worker was started.
        assert not instance.get_records_for_run(
            run_id, of_type=DagsterEventType.STEP_WORKER_STARTING
        ).records
        # All five assets for that partition, materialized by this run, in PostgreSQL.
        assert _materialized(instance, "isolated_pass") == dict.fromkeys(ASSET_NAMES, run_id)
        _assert_isolated(outcome, instance)

    records = S3RecordStore(s3.client(), outcome["bucket"], PREFIX)
    [build_id] = records.list_ids("record")
    record = CompatibilityRecord.model_validate_json(records.get("record", build_id) or b"")
    assert (record.status, record.manifest_id, record.platform) == (
        "pass",
        "isolated_pass",
        AMD64.name,
    )
    assert record.dagster.run_id == run_id
    # Executed by the run pod, on the node's engine.
    assert record.executor is not None
    assert record.executor.kind == "in_process"
    assert record.executor.docker_host == docker_host(services)
    for name, kind in (("log", "evidence"), ("sbom", "sbom"), ("provenance", "provenance")):
        assert record.evidence[name].uri == records.uri(kind, build_id), name
    report = verify_build(build_id, records)
    assert report.ok, report
    # The step's stdout/stderr went to the bucket too (the production compute log manager).
    logs = s3.admin.list_objects_v2(Bucket=outcome["bucket"], Prefix=COMPUTE_LOG_PREFIX)
    assert any(run_id in obj["Key"] for obj in logs.get("Contents", [])), logs


def test_a_failing_combination_in_a_step_pod_records_fail_and_stops_its_chain(
    servers, services, tmp_path, monkeypatch
):
    pg, s3 = servers
    failing = manifest(tests=("smoke", "always_fails"))
    outcome = run_isolated(
        tmp_path, servers, services, "step_pod", "isolated_fail", {"isolated_fail": failing}
    )
    executed = outcome["executed"]
    # The step pod reports the failure through the event log; its process ends normally.
    assert executed.returncode == 0, (executed.stdout + executed.stderr)[-6000:]
    run_id = outcome["run_id"]

    with _instance(pg, outcome["launcher"].dagster_home, monkeypatch) as instance:
        # The assets before the failing stage are materialized; test_report and after are not.
        assert _materialized(instance, "isolated_fail") == {
            "dockerfile": run_id,
            "image": run_id,
        }
        # One step worker, for the chain step, and that step failed.
        [worker] = instance.get_records_for_run(
            run_id, of_type=DagsterEventType.STEP_WORKER_STARTED
        ).records
        assert worker.event_log_entry.step_key == chain_step_name(AMD64)
        [failure] = instance.get_records_for_run(
            run_id, of_type=DagsterEventType.STEP_FAILURE
        ).records
        assert failure.event_log_entry.step_key == chain_step_name(AMD64)
        _assert_isolated(outcome, instance)

    records = S3RecordStore(s3.client(), outcome["bucket"], PREFIX)
    [build_id] = records.list_ids("record")
    record = CompatibilityRecord.model_validate_json(records.get("record", build_id) or b"")
    assert (record.status, record.manifest_id) == ("fail", "isolated_fail")
    assert record.dagster.run_id == run_id
    assert record.executor is not None and record.executor.kind == "k8s"
    assert record.error is not None and record.error.stage == "test"
    suites = {t.suite: t.status for t in record.tests}
    assert suites["always_fails"] == "fail"
    assert records.get("error", build_id) is not None
    log = (records.get("evidence", build_id) or b"").decode()
    assert "isolation: failing on purpose for isolated_fail" in log
