"""Dead letters: the failure sensor on real failed runs, and `factory dlq list` / `requeue`.

Runs fail for real: the registry resource or the store's base image points at a closed loopback
port, so the chain's steps fail transiently, are retried (quickly, by a short retry policy) and
give up. The sensor is then evaluated on the run's real failure event, as the daemon would.
"""

import json
import stat
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pytest
from click.testing import CliRunner

from factory.cli.dlq import dlq_group
from factory.platforms import BY_NAME
from factory.records.store import LocalRecordStore
from factory.services.embedded import docker_host
from factory_assets.jobs import BUILD_JOBS, build_job_name
from factory_assets.partitions import partitions_name
from factory_assets.platform_chain import build_platform_chain
from resources import DockerBuilder, ManifestStore, RecordStore, Registry
from sensors.dead_letter_sensor import dead_letter_sensor
from tests.integration.stores import example_store_copy, manifest

pytestmark = pytest.mark.integration
AMD64 = BY_NAME["linux/amd64"]
QUICK = dg.RetryPolicy(max_retries=2, delay=0.1, backoff=dg.Backoff.EXPONENTIAL)
CLOSED = "127.0.0.1:1"  # nothing listens on port 1: connections are refused at once


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def execute_build(
    instance,
    store_path: Path,
    data_dir: Path,
    registry: str,
    manifest_id: str,
    retry_policy: dg.RetryPolicy | None = QUICK,
) -> dg.ExecuteInProcessResult:
    """Execute the real `build_linux_amd64` job in this process for one partition."""
    defs = dg.Definitions(
        assets=build_platform_chain(AMD64, retry_policy=retry_policy),
        jobs=[j for j in BUILD_JOBS if j.name == build_job_name(AMD64.slug)],
        resources={
            "manifest_store": ManifestStore(path=str(store_path)),
            "docker_builder": DockerBuilder(),
            "registry": Registry(address=registry),
            "record_store": RecordStore(data_dir=str(data_dir)),
        },
    )
    instance.add_dynamic_partitions(partitions_name(AMD64.slug), [manifest_id])
    return defs.resolve_job_def(build_job_name(AMD64.slug)).execute_in_process(
        partition_key=manifest_id, instance=instance, raise_on_error=False
    )


def run_build_job(instance, store_path: Path, data_dir: Path, registry: str, manifest_id: str):
    """Run the real `build_linux_amd64` job (quick retries) for one partition; return its run."""
    result = execute_build(instance, store_path, data_dir, registry, manifest_id)
    assert not result.success
    return instance.get_run_by_id(result.run_id)


def tick(instance, run, data_dir: Path) -> None:
    """Evaluate the sensor on the run's failure event, as the daemon does."""
    [failure] = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
    ).records
    context = dg.build_run_status_sensor_context(
        sensor_name="dead_letter_sensor",
        dagster_event=failure.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
        resources={"record_store": RecordStore(data_dir=str(data_dir))},
    ).for_run_failure()
    dead_letter_sensor(context)


def letters(data_dir: Path) -> dict[str, dict]:
    """The dead letters on disk by key (requeue markers left out)."""
    paths = sorted((data_dir / "dlq").glob("*.json"))
    return {p.stem: json.loads(p.read_text()) for p in paths if ".requeued" not in p.name}


def unreachable_registry_letter(instance, tmp_path) -> tuple[Path, Path, dict]:
    """A build whose registry does not answer: retried, recorded once, dead-lettered once."""
    store = example_store_copy(tmp_path, {"retry_me": manifest()})
    data = tmp_path / "data"
    run = run_build_job(instance, store, data, CLOSED, "retry_me")
    tick(instance, run, data)
    tick(instance, run, data)  # the daemon may see a run twice: one letter, unchanged
    [(key, letter)] = letters(data).items()
    return store, data, {"key": key, "run_id": run.run_id, **letter}


def test_transient_failure_with_exhausted_retries_is_dead_lettered(services, instance, tmp_path):
    _, data, letter = unreachable_registry_letter(instance, tmp_path)
    [record] = LocalRecordStore(data).records()
    assert letter["key"] == record.build_id == letter["build_id"]
    assert letter["run_id"] == record.dagster.run_id
    assert (letter["manifest_id"], letter["platform"], letter["pool"]) == (
        "retry_me",
        "linux/amd64",
        "amd64",
    )
    assert letter["reason"] == "retries_exhausted" and letter["stage"] == "build"
    assert letter["transient"] is True and letter["attempts"] == 3
    assert CLOSED in letter["error"] and "\n" not in letter["error"]
    assert "failed and has requested a retry" in letter["log_tail"]  # the run's own log
    datetime.fromisoformat(letter["failed_at"])
    assert Path(urlparse(letter["record"]).path).exists()
    error_file = json.loads(Path(urlparse(letter["error_file"]).path).read_text())
    assert error_file["transient"] is True and error_file["attempts"] == 3
    # Written once like a record: complete, read-only, no temp file left behind.
    path = data / "dlq" / f"{record.build_id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert [p.name for p in (data / "dlq").iterdir()] == [path.name]


def test_failure_without_record_is_keyed_by_run_id(services, instance, tmp_path):
    store = example_store_copy(tmp_path, {"no_base": manifest()})
    data = json.loads(store.read_text())
    data["bases"]["busybox"]["image"] = f"{CLOSED}/factory/base/busybox"
    store.write_text(json.dumps(data))
    run = run_build_job(instance, store, tmp_path / "data", services.registry, "no_base")
    tick(instance, run, tmp_path / "data")
    assert list(LocalRecordStore(tmp_path / "data").records()) == []
    letter = letters(tmp_path / "data")[run.run_id]
    assert letter["build_id"] is None and letter["record"] is None
    assert letter["reason"] == "no_record" and letter["stage"] == "render"
    assert letter["transient"] is True and letter["attempts"] == 3
    assert letter["manifest_id"] == "no_base" and letter["pool"] == "amd64"
    assert CLOSED in letter["message"] and "linux_amd64__chain" in letter["log_tail"]


def test_run_that_will_be_retried_is_not_dead_lettered_yet(services, instance, tmp_path):
    store = example_store_copy(tmp_path, {"retry_me": manifest()})
    run = run_build_job(instance, store, tmp_path / "data", CLOSED, "retry_me")
    # What the instance tags a failed run with when run retries will launch it again.
    instance.add_run_tags(run.run_id, {"dagster/will_retry": "true"})
    tick(instance, run, tmp_path / "data")
    assert letters(tmp_path / "data") == {}


@pytest.mark.parametrize("cause", ["failing test", "broken Dockerfile"])
def test_deterministic_failure_is_a_result_not_a_dead_letter(services, instance, tmp_path, cause):
    if cause == "failing test":
        store = example_store_copy(
            tmp_path,
            {"result": manifest(tests=["nope"])},
            suites={"nope": {"path": "tests/nope.sh", "timeout_s": 10}},
            files={"tests/nope.sh": "#!/bin/sh\necho no >&2\nexit 1\n"},
        )
    else:
        store = example_store_copy(
            tmp_path,
            {"result": manifest(fragments={"security": "0.1.0", "bad": "0.1.0"})},
            modules={"bad": {"0.1.0": {"path": "modules/bad/0.1.0.Dockerfile"}}},
            files={"modules/bad/0.1.0.Dockerfile": "RUN echo 'about to fail' && exit 7\n"},
        )
    data = tmp_path / "data"
    run = run_build_job(instance, store, data, services.registry, "result")
    tick(instance, run, data)
    [record] = LocalRecordStore(data).records()
    assert record.status in ("fail", "error") and not record.error.transient
    assert letters(data) == {}


def cli(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(dlq_group, args, env=env, catch_exceptions=False)


def test_dlq_list_and_requeue(services, instance, tmp_path):
    store, data, letter = unreachable_registry_letter(instance, tmp_path)
    key = letter["key"]
    home = tmp_path / "dagster_home"
    env = {
        "FACTORY_MANIFEST_STORE": str(store),
        "FACTORY_DATA_DIR": str(data),
        "FACTORY_REGISTRY": services.registry,
        "DAGSTER_HOME": str(home),
        "DOCKER_HOST": docker_host(services),
    }

    listed = cli(["list", "--json"], env)
    assert listed.exit_code == 0, listed.output
    [entry] = json.loads(listed.output)
    assert entry["key"] == key and entry["requeued"] is None and entry["attempts"] == 3
    table = cli(["list"], env)
    assert key in table.output and "waiting" in table.output and "1 waiting" in table.output

    unknown = cli(["requeue", "no-such-build"], env)
    assert unknown.exit_code == 1 and "no dead letter 'no-such-build'" in unknown.output

    # The registry answers now: the requeued run passes and records through DAGSTER_HOME.
    requeued = cli(["requeue", key], env)
    assert requeued.exit_code == 0, requeued.output
    assert f"requeued {key}: retry_me on linux/amd64" in requeued.output
    assert "pass retry_me linux/amd64" in requeued.output
    statuses = sorted(r.status for r in LocalRecordStore(data).records())
    assert statuses == ["error", "pass"]
    with dg.DagsterInstance.from_config(str(home)) as requeue_instance:
        [run] = requeue_instance.get_runs()
    assert run.is_success and run.tags["factory/manifest_id"] == "retry_me"
    assert run.job_name == build_job_name(AMD64.slug)

    [entry] = json.loads(cli(["list", "--json"], env).output)
    assert entry["requeued"]["platform"] == "linux/amd64" and entry["requeued"]["requeued_at"]
    assert (data / "dlq" / f"{key}.requeued.json").exists() and list(letters(data)) == [key]
    assert "0 waiting" in cli(["list"], env).output
    again = cli(["requeue", key], env)
    assert again.exit_code == 1 and "already requeued" in again.output
