"""Dagster's own CLI and `factory run` against the code location, as CI and users run them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from factory.records.store import LocalRecordStore
from factory.services.embedded import docker_host
from factory.settings import PROJECT_ROOT, Settings
from tests.integration.stores import example_store_copy, manifest

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def env_for(tmp_path: Path, store: Path) -> dict[str, str]:
    home = tmp_path / "dagster"
    home.mkdir(exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    # The engine is found through the default data dir; a test data dir has none of its own.
    engine = docker_host(Settings.from_env())
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FACTORY_MANIFEST_STORE": str(store),
        "FACTORY_DATA_DIR": str(tmp_path / "data"),
        "DOCKER_HOST": engine,
    }


def run(args, env, timeout=600):
    return subprocess.run(
        args,
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_dagster_definitions_validate(tmp_path):
    env = env_for(tmp_path, PROJECT_ROOT / "control_plane" / "data" / "manifest.json")
    proc = run([BIN / "dagster", "definitions", "validate", "-w", "workspace.yaml"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dagster_asset_materialize_one_partition(services, tmp_path):
    store = example_store_copy(tmp_path, {"cli_one": manifest()})
    env = env_for(tmp_path, store)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        instance.add_dynamic_partitions("manifests_linux_amd64", ["cli_one"])
    chain = ",".join(
        f"linux_amd64/{a}"
        for a in ("dockerfile", "image", "test_report", "sbom", "compatibility_record")
    )
    proc = run(
        [
            BIN / "dagster",
            "asset",
            "materialize",
            "-m",
            "factory_assets.definitions",
            "--select",
            chain,
            "--partition",
            "cli_one",
        ],
        env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [record] = LocalRecordStore(tmp_path / "data").records()
    assert (record.manifest_id, record.status, record.dagster.partition) == (
        "cli_one",
        "pass",
        "cli_one",
    )
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert instance.get_run_by_id(record.dagster.run_id).is_success


def test_factory_run_records_then_has_nothing_to_do(services, tmp_path):
    store = example_store_copy(
        tmp_path,
        {
            "run_ok": manifest(platforms=["linux/amd64", "linux/amd64+gpu"]),
            "run_fail": manifest(
                fragments={"security": "0.1.0", "core": "0.1.0", "legacy": "0.1.0"},
                platforms=["linux/arm64"],
                tests=["agent"],
            ),
        },
    )
    env = env_for(tmp_path, store)
    first = run([BIN / "factory", "run"], env, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "pass  run_ok linux/amd64" in out
    assert "fail  run_fail linux/arm64" in out
    assert "run_ok linux/amd64+gpu: no_executor" in out
    matrix = out[out.index("manifest ") :]
    assert "not run" in matrix and "pass" in matrix and "fail" in matrix

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert sorted(instance.get_dynamic_partitions("manifests_linux_amd64")) == ["run_ok"]
        runs = instance.get_runs()
        assert {r.tags.get("factory/manifest_id") for r in runs} >= {"run_ok", "run_fail"}

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs_before = len(instance.get_runs())

    # Nothing changed: the failure is a result that waits for its backoff, and nothing starts.
    second = run([BIN / "factory", "run"], env, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "run_fail linux/arm64: failed_backoff (next try " in second.stdout
    assert "the matrix is current, no run started" in second.stdout
    assert "queued" not in second.stdout
    assert second.stdout[second.stdout.index("manifest ") :] == out[out.index("manifest ") :]
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert len(instance.get_runs()) == runs_before

    plan = run([BIN / "factory", "plan"], env, timeout=300)
    assert "failed_backoff (next 20" in plan.stdout and "1 failed)" in plan.stdout

    # --retry-failed re-tests the honest failure against the image already built: no rebuild.
    third = run([BIN / "factory", "run", "--retry-failed"], env, timeout=900)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "run_fail linux/arm64 (re-test: last_failed)" in third.stdout
    assert "(build:" not in third.stdout
    records = list(LocalRecordStore(tmp_path / "data").records())
    assert sorted((r.manifest_id, r.status) for r in records) == [
        ("run_fail", "fail"),
        ("run_fail", "fail"),
        ("run_ok", "pass"),
    ]
    check = run([BIN / "factory", "records", "check"], env, timeout=300)
    assert check.returncode == 0 and "index matches the records" in check.stdout
