"""`factory submit --wait`: the example matrix queued in a running deployment, followed to the end.

A webserver and `dagster-daemon` (tests/integration/ui_server.py) serve the project's workspace
on a throw-away instance, with the example store and a fresh data dir; the sensors are stopped so
every run comes from `factory submit`. First against the local instance (DAGSTER_HOME), then, on
a second deployment, through the webserver's GraphQL API (`--url`) from a process whose own
DAGSTER_HOME is an empty folder. Each time every combination the plan runs must be queued (an
enqueue event, its pool's tag, a priority) and end with a record; the exit status is 1 because
`legacy_agent` honestly fails on linux/arm64, and the output says which run failed.
"""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from factory.platforms import BY_NAME
from factory.pools import pool_limits
from factory.records.store import LocalRecordStore
from tests.integration.dagster.test_pool_queue import _max_overlap, _step_interval
from tests.integration.stores import example_store_copy
from tests.integration.ui_server import UiServer, ui_server

pytestmark = pytest.mark.integration

FACTORY = str(Path(sys.executable).with_name("factory"))
TIMEOUT_S = 1500
# The example store's combinations that run here (GPU ones are `no_executor` without NVIDIA).
EXPECTED = {
    ("batch_worker", "linux/amd64"): "pass",
    ("edge_proxy", "linux/amd64"): "pass",
    ("edge_proxy", "linux/arm64"): "pass",
    ("legacy_agent", "linux/amd64"): "pass",
    ("legacy_agent", "linux/arm64"): "fail",
    ("llm_factory", "linux/amd64"): "pass",
    ("llm_factory", "linux/arm64"): "pass",
}


def submit(server: UiServer, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [FACTORY, "submit", "--wait", *args],
        env=env or server.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def check_queued_and_recorded(server: UiServer, done: subprocess.CompletedProcess) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "1 of 7 runs did not succeed" in output, output
    assert "legacy_agent linux/arm64: FAILURE" in output, output
    queued_ids = [line.split()[1] for line in done.stdout.splitlines() if "  queued   " in line]
    assert len(queued_ids) == len(EXPECTED), output

    with server.instance() as instance:
        runs = {run_id: instance.get_run_by_id(run_id) for run_id in queued_ids}
        for run_id, run in runs.items():
            assert run is not None, run_id
            platform = BY_NAME[run.tags["factory/platform"]]
            assert run.job_name == f"build_{platform.slug}"
            assert run.tags["factory/pool"] == platform.pool
            assert run.tags["dagster/priority"] in ("0", "10")
            assert run.tags["factory/submitted_by"] == "factory submit"
            # The instance's run queue took it, and the daemon launched it from there.
            assert instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.PIPELINE_ENQUEUED
            ).records, run_id
            assert instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.PIPELINE_STARTING
            ).records, run_id
        # The pools' limits (amd64=2, arm64=1) held: at most that many chain steps at once.
        for pool, limit in pool_limits().items():
            steps = [
                _step_interval(instance, run_id)
                for run_id, run in runs.items()
                if run.tags["factory/pool"] == pool
            ]
            assert _max_overlap(steps) <= limit, (pool, steps)
    records = list(LocalRecordStore(server.data_dir).records())
    by_combination = {(r.manifest_id, r.platform): r for r in records}
    assert {k: r.status for k, r in by_combination.items()} == EXPECTED
    assert len(records) == len(EXPECTED)
    assert {r.dagster.run_id for r in records} == set(queued_ids)


@pytest.fixture
def deployment(services, tmp_path):
    store = example_store_copy(tmp_path)
    with ui_server(tmp_path / "ui", manifest_store=store, data_dir=tmp_path / "data") as server:
        yield server


def test_submit_wait_to_the_local_instance(deployment: UiServer):
    done = submit(deployment)
    assert f"submitting to the instance at {deployment.dagster_home}" in done.stdout
    check_queued_and_recorded(deployment, done)
    # Submitting again plans again: nothing is left to run.
    again = submit(deployment)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to submit" in again.stdout


def test_submit_wait_through_the_webserver(deployment: UiServer, tmp_path):
    own_home = tmp_path / "submitter_home"
    env = {**deployment.env, "DAGSTER_HOME": str(own_home)}
    done = submit(deployment, "--url", deployment.url, env=env)
    assert f"submitting to {deployment.url}/graphql" in done.stdout
    check_queued_and_recorded(deployment, done)
    assert not own_home.exists()  # the runs went over HTTP, not into a local instance


def test_submit_refuses_a_bad_url_before_planning(tmp_path):
    env = {"FACTORY_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [FACTORY, "submit", "--url", "ftp://example/x"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "--url 'ftp://example/x' is not an http(s) URL" in done.stderr
    assert "Traceback" not in done.stderr and "store" not in done.stdout
