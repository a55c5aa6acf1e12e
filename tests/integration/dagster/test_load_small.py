"""The load benchmark at a CI size: 12 combinations through the real daemon and webserver.

`bench/load.py` is what answers "do all runs complete, with exactly one record each, and how big
do the daemon and the webserver get"; this runs it small, as a subprocess (it starts and stops
its own webserver and daemon), and fails if any run or record is missing or doubled.
"""

import json
import subprocess
import sys

import pytest

from factory.settings import PROJECT_ROOT

pytestmark = pytest.mark.integration
COMBINATIONS = 12
# On two shared cores a run costs up to a minute or two of process start-up and queueing.
TIMEOUT_S = 2400


@pytest.mark.timeout(TIMEOUT_S + 120)
def test_load_small_completes_with_one_record_per_run(services, tmp_path):
    figures_path = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.load",
            "--combinations",
            str(COMBINATIONS),
            "--arm64-every",
            "4",
            "--timeout",
            str(TIMEOUT_S),
            "--json",
            str(figures_path),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S + 60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    figures = json.loads(figures_path.read_text())
    assert figures["ok"] is True
    assert figures["combinations"] == COMBINATIONS
    assert figures["by_platform"] == {"linux/amd64": 10, "linux/arm64": 2}
    assert (figures["runs"], figures["succeeded"], figures["failed"]) == (COMBINATIONS, 12, 0)
    assert figures["records"] == COMBINATIONS
    assert figures["lost"] == figures["duplicated"] == figures["records_from_other_runs"] == 0
    assert figures["peak_rss_mb"]["daemon"] > 0 and figures["peak_rss_mb"]["webserver"] > 0
    assert "peak RSS daemon" in done.stdout and "OK" in done.stdout.splitlines()[-1]
