"""`factory matrix`: formats, --output and --history, from records in a data dir.

The test store's bases are not in any registry, so the command takes its documented fallback
(statuses from the records, no stale marks) whether or not a local registry runs.
"""

import json

from click.testing import CliRunner

from factory.cli.main import main
from factory.records.store import LocalRecordStore
from tests.unit.records.test_records import make_record
from tests.unit.store_factory import write_store


def invoke(tmp_path, *args):
    env = {
        "FACTORY_MANIFEST_STORE": str(write_store(tmp_path)),
        "FACTORY_DATA_DIR": str(tmp_path / "data"),
    }
    return CliRunner().invoke(main, ["matrix", *args], env=env)


def record(tmp_path, status, minute):
    made = make_record(
        manifest_id="llm_factory",
        platform="linux/arm64",
        status=status,
        finished_at=f"2026-11-26T10:{minute:02d}:00.000000Z",
    )
    LocalRecordStore(tmp_path / "data").write_record(made)
    return made


def test_output_folder_must_exist(tmp_path):
    result = invoke(tmp_path, "--format", "html", "--output", str(tmp_path / "no" / "m.html"))
    assert result.exit_code == 1
    assert "does not exist; create it or choose another --output" in result.output
    assert "Traceback" not in result.output


def test_json_and_html_carry_the_history(tmp_path):
    first, second, third = (
        record(tmp_path, "fail", 1),
        record(tmp_path, "pass", 2),
        record(tmp_path, "error", 3),
    )
    result = invoke(tmp_path, "--format", "json", "--history", "2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    [cell] = [
        c
        for c in report["cells"]
        if (c["manifest_id"], c["platform"]) == ("llm_factory", "linux/arm64")
    ]
    assert cell["status"] == "error" and cell["build_id"] == third.build_id
    assert [h["build_id"] for h in cell["history"]] == [third.build_id, second.build_id]
    assert first.build_id not in result.stdout
    assert cell["links"]["record"].endswith(f"/records/{third.build_id}.json")

    out = tmp_path / "matrix.html"
    result = invoke(tmp_path, "--format", "html", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert f"to {out}" in result.stdout
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and 'class="cell s-error"' in page
    assert page.count('class="badge s-') == 3


def test_text_is_the_default(tmp_path):
    record(tmp_path, "pass", 1)
    result = invoke(tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("manifest ") and "pass" in result.stdout
