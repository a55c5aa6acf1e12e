"""Screenshots of the Dagster UI for docs/ui.md: images/asset-graph.png and images/matrix.png.

Builds the example matrix with `factory run` (the default manifest store, the project's Docker
Engine and registry) into a fresh data dir and Dagster instance, starts `dagster-webserver` on that
instance (tests/integration/ui_server.py, which the browser test uses too), and photographs it with
Debian's headless Chromium through Playwright. Nothing under .factory/ is touched except what
`factory run` shares by design (the engine's layer cache and the registry).

    .venv/bin/python docs/screenshots.py              # build in a temp dir, write docs/images/
    .venv/bin/python docs/screenshots.py --workdir W --keep   # keep W/data and W/dagster
    .venv/bin/python docs/screenshots.py --workdir W --skip-run   # photograph W again
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))  # for tests.integration.ui_server

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

from factory.services import embedded as services  # noqa: E402
from factory.settings import DEFAULT_MANIFEST_STORE, Settings  # noqa: E402
from tests.integration.ui_server import BIN, launch_chromium, ui_server  # noqa: E402

IMAGES = PROJECT_ROOT / "docs" / "images"
CHAIN = ("dockerfile", "image", "test_report", "sbom", "compatibility_record")
TIMEOUT_MS = 60_000


def say(message: str) -> None:
    print(message, flush=True)  # noqa: T201


def factory_run(data_dir: Path, dagster_home: Path) -> None:
    """`factory run` of the default store into data_dir and the instance at dagster_home."""
    env = {
        **os.environ,
        "FACTORY_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(dagster_home),
        "FACTORY_MANIFEST_STORE": str(DEFAULT_MANIFEST_STORE),
        "DOCKER_HOST": services.docker_host(Settings.from_env()),
    }
    say(f"factory run into {data_dir} (instance {dagster_home})")
    done = subprocess.run([str(BIN / "factory"), "run"], env=env, cwd=PROJECT_ROOT, check=False)
    if done.returncode != 0:
        sys.exit(f"factory run failed ({done.returncode}); no screenshots taken")


def asset_graph(page: Page, url: str, group: str, out: Path) -> None:
    """One platform's chain in the group's lineage view, wide enough for the nodes' details."""
    page.set_viewport_size({"width": 2000, "height": 560})
    page.goto(f"{url}/locations/factory/asset-groups/{group}")
    page.get_by_role("button", name="Hide navigation").click()
    page.reload()
    for name in CHAIN:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    # Nodes show their details (partitions filled, kinds) only at this zoom: wait for them.
    expect(page.get_by_text("100% filled").first).to_be_visible()
    page.wait_for_timeout(1500)  # let the fit-to-view animation end
    page.screenshot(path=str(out))


def matrix(page: Page, url: str, out: Path) -> None:
    """The matrix asset's page down to its latest materialization's matrix tables."""
    # The UI scrolls inside its own container, so a full-page shot is only the viewport: make the
    # viewport tall enough, then cut below the tables.
    height = 1600
    page.set_viewport_size({"width": 1600, "height": height})
    page.goto(f"{url}/assets/compatibility_matrix")
    expect(page.get_by_text("not run", exact=True).first).to_be_visible()
    bottom = 0.0
    for key in ("matrix", "last_5_results"):
        row = page.get_by_role("row").filter(has=page.get_by_text(key, exact=True))
        if key == "matrix":
            expect(row.first).to_be_visible()
        if row.count():
            box = row.first.bounding_box()
            bottom = max(bottom, box["y"] + box["height"])
    page.wait_for_timeout(500)
    clip = {"x": 0, "y": 0, "width": 1600, "height": min(bottom + 2, height)}
    page.screenshot(path=str(out), clip=clip)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where data/ and dagster/ go (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp workdir")
    parser.add_argument("--skip-run", action="store_true", help="reuse the workdir's last run")
    parser.add_argument("--group", default="linux_amd64", help="the platform group to show")
    parser.add_argument("--output", type=Path, default=IMAGES)
    args = parser.parse_args()

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="factory-screens-"))).resolve()
    data_dir, dagster_home = workdir / "data", workdir / "dagster"
    args.output.mkdir(parents=True, exist_ok=True)
    try:
        services.up(Settings.from_env(), echo=say)
        if not args.skip_run:
            factory_run(data_dir, dagster_home)
        with (
            ui_server(
                workdir / "ui",
                manifest_store=DEFAULT_MANIFEST_STORE,
                data_dir=data_dir,
                dagster_home=dagster_home,
                daemon=False,
            ) as server,
            sync_playwright() as playwright,
        ):
            say(f"webserver at {server.url}")
            browser = launch_chromium(playwright)
            try:
                page = browser.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                asset_graph(page, server.url, args.group, args.output / "asset-graph.png")
                matrix(page, server.url, args.output / "matrix.png")
            finally:
                browser.close()
        for name in ("asset-graph.png", "matrix.png"):
            path = args.output / name
            say(f"wrote {path} ({path.stat().st_size} bytes)")
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir}")


if __name__ == "__main__":
    main()
