"""The Dagster UI in a real browser: launch one partition of a platform's chain and see it succeed;
backfill every partition of a platform from the partitions dialog and see the matrix follow.

Debian's Chromium (installed here with apt-get if missing), headless, driven by Playwright with
`executable_path`; no browser download and no display. The webserver and the daemon that executes
the queued run use a throw-away instance, data dir and manifest store (see ui_server.py).
"""

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from factory.records.store import LocalRecordStore
from factory_assets.automation import SENSOR_NAME
from factory_assets.partitions import partitions_name
from factory_assets.run_pool import IMPLICIT_JOBS, run_combination
from tests.integration.dagster.test_pool_queue import _max_overlap, _step_interval
from tests.integration.stores import example_store_copy, manifest
from tests.integration.ui_server import UiServer, ensure_chromium, launch_chromium, ui_server

pytestmark = pytest.mark.integration

PARTITION = "ui_demo"
SLUG = "linux_amd64"
PLATFORM = "linux/amd64"
ASSET = f"/assets/{SLUG}/compatibility_record"
GROUP = f"/locations/factory/asset-groups/{SLUG}"
CHAIN = ("dockerfile", "image", "test_report", "sbom", "compatibility_record")

UI_TIMEOUT_MS = 60_000
TOAST_TIMEOUT_MS = 5_000
RUN_TIMEOUT_MS = 600_000


@pytest.fixture(scope="session")
def chromium() -> Path:
    return ensure_chromium()


@pytest.fixture
def ui(services, chromium, tmp_path) -> Iterator[UiServer]:
    """A webserver and daemon on a fresh instance whose store has one manifest, `ui_demo`."""
    store = example_store_copy(tmp_path, {PARTITION: manifest(platforms=[PLATFORM])})
    with ui_server(
        tmp_path / "ui",
        manifest_store=store,
        data_dir=tmp_path / "data",
        partitions={partitions_name(SLUG): [PARTITION]},
    ) as server:
        yield server


def launch_partition_from_group(page: Page, server: UiServer) -> str:
    """Materialize all of the group's assets for PARTITION through the launch dialog; run id."""
    page.goto(server.url + GROUP)
    for name in CHAIN[:-1]:  # the graph shortens compatibility_record to fit its node
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    page.get_by_role("button", name=re.compile(r"Materialize all \(\d+\)")).click()
    dialog = page.get_by_role("dialog").filter(has_text=f"materialize {len(CHAIN)} assets")
    expect(dialog).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_placeholder("Filter partitions").fill(PARTITION)
    page.get_by_role("menuitem", name=PARTITION).click()
    page.keyboard.press("Escape")  # closes the partition list, not the dialog
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    dialog.get_by_role("button", name="Launch 1 run").click()
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    expect(toast).to_be_visible()
    view = page.get_by_role("link", name="View", exact=True)
    run_id = view.get_attribute("href").rsplit("/runs/", 1)[1]
    assert run_id.startswith(re.search(r"[0-9a-f]{8}", toast.inner_text()).group(0))
    try:
        view.click(timeout=TOAST_TIMEOUT_MS)
    except PlaywrightTimeoutError:  # the toast went away first (a slow, loaded machine)
        page.goto(f"{server.url}/runs/{run_id}")
    page.wait_for_url(re.compile(f"/runs/{run_id}"))
    return run_id


def open_partition(page: Page, server: UiServer) -> None:
    """The record asset's page, then its Partitions tab with PARTITION selected."""
    page.goto(server.url + ASSET)
    expect(page.get_by_text(f"The immutable compatibility record for {PLATFORM}.")).to_be_visible()
    page.get_by_text("Partitions", exact=True).first.click()
    page.get_by_text(PARTITION, exact=True).first.click()
    expect(page).to_have_url(re.compile(f"partition={PARTITION}"))


def wait_for_run(page: Page, server: UiServer) -> None:
    """On the run's page: the status the UI shows once the run ends is Success."""
    expect(page.get_by_text(f"partition: {PARTITION}")).to_be_visible()
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    expect(status).to_be_visible(timeout=RUN_TIMEOUT_MS)
    assert status.inner_text() == "Success", server.log_tail()
    # The chain's five assets are one step.
    expect(page.get_by_text("Succeeded (1)")).to_be_visible()


@contextlib.contextmanager
def browser_page(server: UiServer, tmp_path: Path) -> Iterator[Page]:
    """A page of headless Chromium; on failure a full-page screenshot and the servers' logs."""
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        try:
            yield page
        except Exception:
            shot = tmp_path / "failure.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the failing page: {shot}\n{server.log_tail()}")  # noqa: T201
            raise
        finally:
            browser.close()


def test_launch_partition_from_ui_and_see_it_succeed(ui: UiServer, tmp_path):
    with browser_page(ui, tmp_path) as page:
        open_partition(page, ui)
        expect(page.get_by_text("Missing (1)")).to_be_visible()
        expect(page.get_by_text("No metadata entries")).to_be_visible()

        run_id = launch_partition_from_group(page, ui)
        wait_for_run(page, ui)

        # Back on the asset: the partition is materialized, with the record's metadata.
        open_partition(page, ui)
        expect(page.get_by_text("Materialized (1)")).to_be_visible()
        expect(page.get_by_text("Missing (0)")).to_be_visible()
        expect(page.get_by_text("build_id", exact=True)).to_be_visible()
        expect(page.get_by_text("pass", exact=True).first).to_be_visible()

    # What the UI showed is what the instance and the record store hold.
    with ui.instance() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags.get("dagster/partition") == PARTITION
        assert run.tags.get("dagster/from_ui") == "true"
        record_asset = dg.AssetKey([SLUG, "compatibility_record"])
        assert instance.get_materialized_partitions(record_asset) == {PARTITION}
    [record] = LocalRecordStore(ui.data_dir).records()
    assert (record.manifest_id, record.platform, record.status) == (PARTITION, PLATFORM, "pass")
    assert (record.dagster.run_id, record.dagster.partition) == (run_id, PARTITION)
    # The UI's run carries no factory tag; `factory status` still counts it in its pool.
    assert not any(key.startswith("factory/") for key in run.tags)
    queues = factory_status(ui)["queues"]
    assert queues["amd64"]["finished_last_hour"] == 1, queues
    assert queues["arm64"]["finished_last_hour"] == queues["gpu"]["finished_last_hour"] == 0


def factory_status(server: UiServer) -> dict:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("factory")), "status", "--json"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


BACKFILL = ("bf_one", "bf_two", "bf_three")
AUTOMATION_INTERVAL_S = 5
BACKFILL_TIMEOUT_S = 900


@pytest.fixture
def backfill_ui(services, chromium, tmp_path, monkeypatch) -> Iterator[UiServer]:
    """Three manifests on linux/amd64 (a pool of 2 slots); only the results sensor runs."""
    monkeypatch.setenv("FACTORY_AUTOMATION_INTERVAL_S", str(AUTOMATION_INTERVAL_S))
    store = example_store_copy(tmp_path, {key: manifest(platforms=[PLATFORM]) for key in BACKFILL})
    with ui_server(
        tmp_path / "ui",
        manifest_store=store,
        data_dir=tmp_path / "data",
        partitions={partitions_name(SLUG): list(BACKFILL)},
        keep_sensors=(SENSOR_NAME,),
    ) as server:
        yield server


def launch_backfill_of_all_partitions(page: Page, server: UiServer) -> None:
    """The group's "Materialize all" dialog, partition selection "All", "Launch backfill"."""
    page.goto(server.url + GROUP)
    page.get_by_role("button", name=re.compile(r"Materialize all \(\d+\)")).click()
    dialog = page.get_by_role("dialog").filter(has_text=f"materialize {len(CHAIN)} assets")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="All", exact=True).click()
    expect(dialog.get_by_text(f"{len(BACKFILL)} partitions", exact=True)).to_be_visible()
    dialog.get_by_role("button", name="Launch backfill").click()
    expect(dialog).to_be_hidden()


def _matrix_with_all(instance: dg.DagsterInstance):
    result = instance.fetch_materializations(
        dg.AssetKey("compatibility_matrix"), limit=20, ascending=False
    )
    for event in result.records:
        table = event.asset_materialization.metadata["matrix"].value
        cells = {r.data["manifest"]: r.data[PLATFORM] for r in table.records}
        if all(cells.get(key) == "pass" for key in BACKFILL):
            return event
    return None


def _finished_runs(instance: dg.DagsterInstance, backfill_id: str, deadline: float, server):
    """The backfill's runs once each has finished. A run writes its record (which the matrix
    follows) inside its step, so the matrix can show the last record a moment before that run
    itself ends."""
    runs_filter = dg.RunsFilter(tags={"dagster/backfill": backfill_id})
    while time.monotonic() < deadline:
        runs = instance.get_runs(runs_filter)
        if runs and all(run.is_finished for run in runs):
            return runs
        time.sleep(1)
    pytest.fail(f"backfill runs not finished in time:\n{server.log_tail()}")


def test_backfill_every_partition_of_a_platform_from_the_ui(backfill_ui: UiServer, tmp_path):
    server = backfill_ui
    with browser_page(server, tmp_path) as page:
        launch_backfill_of_all_partitions(page, server)

    record_key = dg.AssetKey([SLUG, "compatibility_record"])
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    with server.instance() as instance:
        while time.monotonic() < deadline:
            matrix = _matrix_with_all(instance)
            if matrix is not None:
                break
            time.sleep(2)
        else:
            pytest.fail(f"no matrix with every backfilled partition:\n{server.log_tail()}")
        [backfill] = instance.get_backfills()
        runs = _finished_runs(instance, backfill.backfill_id, deadline, server)
        # One run per partition, each in the amd64 pool by its assets (no factory tags).
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(BACKFILL)
        for run in runs:
            assert run.status == dg.DagsterRunStatus.SUCCESS
            assert run.job_name in IMPLICIT_JOBS
            assert not any(key.startswith("factory/") for key in run.tags)
            assert run_combination(run).pool == "amd64"
        # The pool's limit (2) held across the backfill's runs.
        assert _max_overlap([_step_interval(instance, r.run_id) for r in runs]) <= 2
        assert instance.get_materialized_partitions(record_key) == set(BACKFILL)
        # The matrix followed by itself: launched by the results sensor after the records.
        matrix_run = instance.get_run_by_id(matrix.run_id)
        assert matrix_run.tags.get("dagster/sensor_name") == SENSOR_NAME
        last_record = max(
            instance.fetch_materializations(record_key, limit=10).records,
            key=lambda e: e.timestamp,
        )
        assert matrix.timestamp > last_record.timestamp
    records = list(LocalRecordStore(server.data_dir).records())
    assert sorted((r.manifest_id, r.status) for r in records) == sorted(
        (key, "pass") for key in BACKFILL
    )
    assert {r.dagster.run_id for r in records} == {r.run_id for r in runs}
    assert factory_status(server)["queues"]["amd64"]["finished_last_hour"] == len(BACKFILL)
