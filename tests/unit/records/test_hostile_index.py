"""Hostile settings and files around the records index and the run state: a message naming what
is wrong, never a traceback, and no record lost."""

import json
import os
import sqlite3

import pytest
from click.testing import CliRunner

from factory.cli.main import main
from factory.plan.run_state import NAME as RUN_STATE
from factory.plan.run_state import RunState
from factory.records.index import open_index
from factory.records.index_schema import SQLITE_NAME, URL_ENV
from factory.records.model import record_figures
from factory.records.store import LocalRecordStore
from tests.unit.records.test_records import make_record


def invoke(tmp_path, *args, url: str | None = None):
    env = {"FACTORY_DATA_DIR": str(tmp_path / "data"), "FACTORY_S3_BUCKET": "", URL_ENV: url}
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=True)
    text = result.output + (result.stderr or "")
    assert "Traceback" not in text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result, text


@pytest.fixture
def recorded(tmp_path):
    store = LocalRecordStore(tmp_path / "data")
    record = make_record()
    store.write_record(record)  # no index attached: the record file alone
    return store, record


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("nonsense://x", URL_ENV),
        ("sqlite:////etc/passwd/index.sqlite", "records index"),
        ("postgresql+psycopg2://factory@127.0.0.1:1/dagster", "records index"),
        ("not a url at all", URL_ENV),
    ],
)
@pytest.mark.parametrize("command", [["records"], ["records", "check"], ["records", "reindex"]])
def test_an_unusable_index_url_is_a_message(tmp_path, recorded, url, said, command):
    result, text = invoke(tmp_path, *command, url=url)
    assert result.exit_code == 1 and said in text, text
    assert "postgresql+psycopg2://factory@" not in text or ":***@" not in text
    store, record = recorded
    assert store.read_record(record.build_id) == record  # the record is untouched


@pytest.mark.parametrize(
    "plant",
    [
        lambda p: p.write_bytes(b"\0not a database\xff" * 100),
        lambda p: p.write_text("SQLite format 3\0 truncated"),
        lambda p: p.mkdir(),
    ],
    ids=["garbage", "truncated header", "a directory"],
)
def test_a_broken_index_file_is_a_message(tmp_path, recorded, plant):
    plant(tmp_path / "data" / SQLITE_NAME)
    result, text = invoke(tmp_path, "records")
    assert result.exit_code == 1 and "records index" in text, text
    store, record = recorded
    assert store.read_record(record.build_id) == record


def index_with_a_bad_row(tmp_path, monkeypatch, column: str, value: str):
    """A SQLite index of two records, `column` of the second's row overwritten with `value`."""
    monkeypatch.setenv(URL_ENV, "")
    store = LocalRecordStore(tmp_path / "data")
    index = open_index(store, tmp_path / "data")
    index.ensure_current(echo=lambda _: None)
    good, bad = make_record(), make_record()
    store.write_record(good)
    store.write_record(bad)
    with sqlite3.connect(tmp_path / "data" / SQLITE_NAME) as db:
        db.execute(
            f"UPDATE factory_records SET {column} = ? WHERE build_id = ?", (value, bad.build_id)
        )
    return index, good, bad


def test_a_row_that_is_not_a_record_is_skipped_with_a_warning(tmp_path, monkeypatch):
    _, good, _ = index_with_a_bad_row(
        tmp_path, monkeypatch, "record_json", '{"build_id": 1, "\\u0000": ['
    )
    result, text = invoke(tmp_path, "records")
    assert result.exit_code == 0, text
    assert good.build_id in text and "is not a record" in text
    check, said = invoke(tmp_path, "records", "check")
    assert check.exit_code == 1 and "differ from their record" in said
    fixed, _ = invoke(tmp_path, "records", "reindex")
    assert fixed.exit_code == 0
    again, said = invoke(tmp_path, "records", "check")
    assert again.exit_code == 0 and "index matches the records" in said


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b'{"instance": 5}', b"\xff\xfe" * 10, b"{" * 100_000, b'"x"' * 40_000],
    ids=["empty", "cut", "a list", "odd instance", "not UTF-8", "deep", "huge"],
)
def test_a_hostile_run_state_is_no_state(tmp_path, content):
    (tmp_path / RUN_STATE).write_bytes(content)
    state = RunState(tmp_path, tmp_path / "dagster")
    assert not state.partitions_synced("x") and not state.matrix_current([1, 2.0])
    state.record_partitions("x")  # replaced by a good one
    assert state.partitions_synced("x")
    assert json.loads((tmp_path / RUN_STATE).read_text())["partitions"] == "x"


def test_a_run_state_that_is_not_a_file_is_no_state(tmp_path):
    os.mkfifo(tmp_path / RUN_STATE)
    assert not RunState(tmp_path, tmp_path / "dagster").partitions_synced("x")


@pytest.mark.parametrize("summary", ["{", "[]", '{"t": {}}', '{"t": 1, "c": [], "i": 5, "e": []}'])
def test_a_summary_that_is_not_one_is_skipped(tmp_path, monkeypatch, capsys, summary):
    index, good, bad = index_with_a_bad_row(tmp_path, monkeypatch, "summary_json", summary)
    assert [r.build_id for r in index.summaries()] == [good.build_id]
    assert f"row {bad.build_id} is not a record" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("column", "value"),
    [("build_s", "fast"), ("cache_steps", "seven"), ("image_layers", 2.5), ("pool", b"\xff")],
)
def test_build_figures_that_are_not_numbers_are_skipped(
    tmp_path, monkeypatch, capsys, column, value
):
    index, good, bad = index_with_a_bad_row(tmp_path, monkeypatch, column, value)
    assert [f.build_id for f in index.figures()] == [good.build_id]
    assert f"row {bad.build_id} is not a record" in capsys.readouterr().err
    check, said = invoke(tmp_path, "records", "check")
    assert check.exit_code == 1 and "differ from their record" in said


def test_build_figures_are_the_records_figures(tmp_path, monkeypatch):
    index, good, bad = index_with_a_bad_row(tmp_path, monkeypatch, "worker", "elsewhere")
    by_id = {f.build_id: f for f in index.figures()}
    assert by_id == {r.build_id: record_figures(r) for r in (good, bad)}
    later = max(good.finished_at, bad.finished_at)
    assert {f.build_id for f in index.figures(finished_after=later)} == {
        r.build_id for r in (good, bad) if r.finished_at == later
    }
