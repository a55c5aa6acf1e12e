"""The results consumer: the matrix follows new records by itself, whatever launched the build.

A webserver and `dagster-daemon` (tests/integration/ui_server.py) serve the project's workspace on
a throw-away instance, with its sensors running and the results sensor ticking every few seconds.
Two builds, neither through `factory run`: the manifest sensor requests the first; the second is
one partition materialized with `dagster asset materialize`. Each must be followed by a
`compatibility_matrix` materialization, launched by `results_automation_sensor` within two of its
ticks of the record, whose matrix table holds the new record's result.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from factory.records.store import LocalRecordStore
from factory_assets.automation import SENSOR_NAME
from factory_assets.partitions import partitions_name
from tests.integration.stores import example_store_copy, manifest
from tests.integration.ui_server import LOCATION, REPOSITORY, STOP_SENSOR, UiServer, ui_server

pytestmark = pytest.mark.integration

SLUG = "linux_amd64"
PLATFORM = "linux/amd64"
INTERVAL_S = 5
MATRIX = dg.AssetKey("compatibility_matrix")
RECORD = dg.AssetKey([SLUG, "compatibility_record"])
STAGES = ("dockerfile", "image", "test_report", "sbom", "compatibility_record")
CHAIN = ",".join(f"{SLUG}/{name}" for name in STAGES)
BUILD_TIMEOUT_S = 600
# A tick is requested every INTERVAL_S; the daemon may start it a little late on a loaded host.
TICK_SLACK_S = 4


def _matrix_rows(instance: dg.DagsterInstance) -> list[tuple[str, dict, str]]:
    """(run id, matrix row by manifest, ...) of every matrix materialization, oldest first."""
    result = instance.fetch_materializations(MATRIX, limit=100, ascending=True)
    rows = []
    for record in result.records:
        table = record.asset_materialization.metadata["matrix"].value
        by_manifest = {r.data["manifest"]: r.data for r in table.records}
        rows.append((record.run_id, by_manifest, record.timestamp))
    return rows


def _record_materialization(instance, partition: str):
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RECORD, asset_partitions=[partition]), limit=1
    )
    return result.records[0] if result.records else None


def _wait_for(what: str, check, server: UiServer, timeout_s: float = BUILD_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}:\n{server.log_tail()}")


def _matrix_after(instance, partition: str, record_time: float):
    """The first matrix materialization after `record_time` whose table shows `partition`."""
    for run_id, by_manifest, when in _matrix_rows(instance):
        if when >= record_time and by_manifest.get(partition, {}).get(PLATFORM) == "pass":
            return run_id, when
    return None


def _assert_followed(server: UiServer, partition: str) -> None:
    with server.instance() as instance:
        record_event = _wait_for(
            f"{partition}'s record", lambda: _record_materialization(instance, partition), server
        )
        run_id, _ = _wait_for(
            f"a matrix with {partition}",
            lambda: _matrix_after(instance, partition, record_event.timestamp),
            server,
            timeout_s=240,
        )
        run = instance.get_run_record_by_id(run_id)
        assert run is not None
        assert run.dagster_run.tags.get("dagster/sensor_name") == SENSOR_NAME, run.dagster_run.tags
        # Requested by the sensor within two of its ticks of the record's materialization.
        created = run.create_timestamp.timestamp()
        assert created - record_event.timestamp <= 2 * INTERVAL_S + TICK_SLACK_S, (
            created - record_event.timestamp
        )
        assert not instance.get_runs(dg.RunsFilter(job_name="compatibility_matrix_job"))


def _stop_sensor(server: UiServer, name: str) -> None:
    query = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
        ... on Sensor { sensorState { id status } } } }"""
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "sensorName": name,
    }
    state = server.graphql(query, {"selector": selector})["sensorOrError"]["sensorState"]
    result = server.graphql(STOP_SENSOR, {"id": state["id"]})["stopSensor"]
    assert result["__typename"] == "StopSensorMutationResult", result


def test_matrix_follows_sensor_and_cli_runs(services, tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORY_AUTOMATION_INTERVAL_S", str(INTERVAL_S))
    monkeypatch.setenv("FACTORY_SENSOR_INTERVAL_S", str(INTERVAL_S))
    store = example_store_copy(tmp_path, {"rc_sensor": manifest(platforms=[PLATFORM])})
    data_dir = tmp_path / "data"
    with ui_server(
        tmp_path / "ui", manifest_store=store, data_dir=data_dir, sensors=True
    ) as server:
        # 1. The manifest sensor adds the partition and requests its run.
        _assert_followed(server, "rc_sensor")
        with server.instance() as instance:
            [sensor_run] = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "rc_sensor"}))
            assert sensor_run.tags.get("dagster/sensor_name") == "manifest_change_sensor"

        # 2. One partition through Dagster's own CLI, the manifest sensor stopped first so the
        # new manifest is built by that command alone.
        _stop_sensor(server, "manifest_change_sensor")
        data = json.loads(Path(store).read_text())
        data["manifests"]["rc_cli"] = manifest(platforms=[PLATFORM])
        Path(store).write_text(json.dumps(data, indent=2))
        with server.instance() as instance:
            instance.add_dynamic_partitions(partitions_name(SLUG), ["rc_cli"])
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("dagster")),
                "asset",
                "materialize",
                "-m",
                "factory_assets.definitions",
                "--select",
                CHAIN,
                "--partition",
                "rc_cli",
            ],
            env=server.env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        _assert_followed(server, "rc_cli")

    statuses = {(r.manifest_id, r.status) for r in LocalRecordStore(data_dir).records()}
    assert statuses == {("rc_sensor", "pass"), ("rc_cli", "pass")}


TARGETS = {MATRIX, dg.AssetKey("multiarch_index")}


def _ticker(instance: dg.DagsterInstance):
    """One evaluation of the matrix assets' automation conditions, as the sensor's tick does."""
    from factory_assets.definitions import defs

    def tick(cursor):
        return dg.evaluate_automation_conditions(
            defs=defs,
            instance=instance,
            asset_selection=dg.AssetSelection.assets(*TARGETS),
            cursor=cursor,
        )

    return tick


def test_a_burst_of_records_is_one_matrix_request_per_tick():
    """100 record materializations between two evaluations: one request of the matrix assets,
    not 100; nothing new, no request; the next burst, one again."""
    keys = [f"burst_{n:03d}" for n in range(100)]
    targets = TARGETS
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(partitions_name(SLUG), keys)
        tick = _ticker(instance)

        def burst(partitions) -> None:
            for key in partitions:
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(asset_key=RECORD, partition=key)
                )

        result = tick(None)  # the first evaluation only sets the starting point
        assert result.total_requested == 0
        burst(keys)
        result = tick(result.cursor)
        assert {key: result.get_num_requested(key) for key in targets} == {
            MATRIX: 1,
            dg.AssetKey("multiarch_index"): 1,
        }
        result = tick(result.cursor)
        assert result.total_requested == 0
        burst(keys[:50])
        result = tick(result.cursor)
        assert result.get_num_requested(MATRIX) == 1


def test_a_failed_build_run_brings_the_matrix_up_to_date(services, tmp_path):
    """A failing build writes a record but materializes no record asset: its failed run is what
    the condition sees. Here the registry does not answer (a real run, retried, then failed)."""
    from tests.integration.dagster.test_dead_letters import CLOSED, execute_build

    store = example_store_copy(tmp_path, {"fails": manifest(platforms=[PLATFORM])})
    with dg.instance_for_test() as instance:
        tick = _ticker(instance)
        result = tick(None)
        assert result.total_requested == 0
        run = execute_build(instance, store, tmp_path / "data", CLOSED, "fails")
        assert not run.success
        [record] = LocalRecordStore(tmp_path / "data").records()
        assert record.status == "error"
        result = tick(result.cursor)
        assert {key: result.get_num_requested(key) for key in TARGETS} == dict.fromkeys(TARGETS, 1)
        assert tick(result.cursor).total_requested == 0


def test_a_record_on_the_tick_after_a_request_is_not_lost():
    """A record that lands between the tick that requested the matrix and the next tick may have
    come too late for that matrix run: that next tick requests the matrix again, and the one after
    (nothing new) does not."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(partitions_name(SLUG), ["early", "late"])
        tick = _ticker(instance)

        def record(partition: str) -> None:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=RECORD, partition=partition)
            )

        result = tick(None)
        record("early")
        result = tick(result.cursor)
        assert result.get_num_requested(MATRIX) == 1
        record("late")
        result = tick(result.cursor)
        assert {key: result.get_num_requested(key) for key in TARGETS} == dict.fromkeys(TARGETS, 1)
        assert tick(result.cursor).total_requested == 0
