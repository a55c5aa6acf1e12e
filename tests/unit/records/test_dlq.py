"""Dead letters without Dagster: which failures get one, write-once letters and requeue markers."""

import json
import threading

import pytest

from factory.records import dlq
from factory.records.model import ErrorInfo
from factory.records.store import LocalRecordStore
from tests.unit.records.test_records import make_record

RUN_ID = "7d7c2a1e-0000-4000-8000-000000000001"


def failed(status: str, *, transient: bool, attempts: int = 1):
    error = ErrorInfo(
        stage="build", message="registry down\nmore", transient=transient, attempts=attempts
    )
    return make_record(status=status, error=error)


@pytest.mark.parametrize(
    ("status", "transient", "expected"),
    [
        ("error", True, True),  # retries ran out on infrastructure trouble
        ("error", False, False),  # a broken Dockerfile: a result
        ("fail", False, False),  # a failing test: a result
    ],
)
def test_only_transient_errors_need_a_dead_letter(status, transient, expected):
    assert dlq.needs_dead_letter(failed(status, transient=transient)) is expected
    assert dlq.needs_dead_letter(make_record()) is False


def letter(record=None, *, failed_at="2026-11-27T00:00:00.000000Z"):
    record = record or failed("error", transient=True, attempts=4)
    return dlq.letter_for_record(
        record,
        run_id=RUN_ID,
        job_name="build_linux_arm64",
        failed_at=failed_at,
        record_uri=None,
        error_uri=None,
        run_log="step failed\n" * 100,
    )


def test_letter_for_record_carries_the_record_and_a_one_line_summary():
    record = failed("error", transient=True, attempts=4)
    made = letter(record)
    assert (made.key, made.build_id, made.run_id) == (record.build_id, record.build_id, RUN_ID)
    assert (made.stage, made.attempts, made.transient) == ("build", 4, True)
    assert made.error == "registry down" and made.message == "registry down\nmore"
    # The record's own log tail is empty here: the run's log stands in, trimmed.
    assert made.log_tail.count("\n") < 40 and "step failed" in made.log_tail
    assert made.reason == "retries_exhausted"


def test_letter_without_record_is_keyed_by_run_id():
    made = dlq.letter_without_record(
        run_id=RUN_ID,
        job_name=None,
        manifest_id="m",
        platform="linux/amd64",
        pool="amd64",
        stage="run",
        message="",
        transient=True,
        attempts=2,
        log_text="",
        failed_at="2026-11-27T00:00:00.000000Z",
    )
    assert (made.key, made.build_id, made.reason) == (RUN_ID, None, "no_record")


def test_write_is_once_and_idempotent(tmp_path):
    store = LocalRecordStore(tmp_path)
    first = letter()
    assert dlq.write(store, first) is True
    assert dlq.write(store, first.model_copy(update={"run_id": "other"})) is False
    assert dlq.read(store, first.key).run_id == RUN_ID


def test_read_of_an_unknown_key_says_where_it_looked(tmp_path):
    with pytest.raises(dlq.UnknownDeadLetterError, match="factory dlq list"):
        dlq.read(LocalRecordStore(tmp_path), "nope")
    with pytest.raises(dlq.UnknownDeadLetterError):
        dlq.read(LocalRecordStore(tmp_path), "../records/x")


def test_requeue_marker_is_written_once_and_not_listed_as_a_letter(tmp_path):
    store = LocalRecordStore(tmp_path)
    made = letter()
    dlq.write(store, made)
    outcomes: list[str] = []

    def claim() -> None:
        try:
            dlq.mark_requeued(store, made.key, {"requeued_at": "now"})
            outcomes.append("claimed")
        except dlq.AlreadyRequeuedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["claimed"] + ["refused"] * 7
    assert (tmp_path / "dlq" / f"{made.key}.requeued.json").exists()
    assert dlq.letter_keys(store) == [made.key]
    [entry] = dlq.entries(store)
    assert entry.requeued == {"key": made.key, "requeued_at": "now"}
    assert json.loads(json.dumps(entry.as_dict()))["requeued"]["requeued_at"] == "now"
    assert not [p for p in (tmp_path / "dlq").rglob(".tmp-*")]


def test_requeue_of_an_unknown_letter_is_refused(tmp_path):
    with pytest.raises(dlq.UnknownDeadLetterError):
        dlq.mark_requeued(LocalRecordStore(tmp_path), "nope", {})


def test_entries_are_oldest_first(tmp_path):
    store = LocalRecordStore(tmp_path)
    late = letter(failed_at="2026-11-27T02:00:00.000000Z")
    early = letter(failed_at="2026-11-27T01:00:00.000000Z")
    for made in (late, early):
        dlq.write(store, made)
    assert [e.letter.key for e in dlq.entries(store)] == [early.key, late.key]
