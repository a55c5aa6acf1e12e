"""Failed combinations are results: retried after an exponential backoff, or at once on request."""

from datetime import UTC, datetime, timedelta

import pytest

from factory.plan.backoff import CAP_ENV, FIRST_ENV, Backoff
from factory.plan.decisions import RecordIndex, plan
from factory.settings import SettingsError
from factory.store.load import load_store
from tests.unit.plan.test_planning import DIGESTS, by_combo, record_for
from tests.unit.store_factory import write_store

FAILED_AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_delays_double_from_one_hour_up_to_the_cap():
    backoff = Backoff()
    hours = [backoff.delay(n) / timedelta(hours=1) for n in range(1, 9)]
    assert hours == [1, 2, 4, 8, 16, 32, 32, 32]
    assert Backoff(first_s=60, cap_s=600).delay(1000) == timedelta(seconds=600)


@pytest.mark.parametrize(
    ("first", "cap", "wrong"),
    [
        ("soon", None, FIRST_ENV),
        ("-5", None, FIRST_ENV),
        ("100", "50", CAP_ENV),
        ("1e99", None, FIRST_ENV),
    ],
)
def test_bad_settings_are_named(monkeypatch, first, cap, wrong):
    monkeypatch.setenv(FIRST_ENV, first)
    if cap is not None:
        monkeypatch.setenv(CAP_ENV, cap)
    with pytest.raises(SettingsError, match=wrong):
        Backoff.from_env()


def planned(tmp_path, failures: int, now: datetime, **options):
    store = load_store(write_store(tmp_path))
    first = plan(store, DIGESTS, RecordIndex(), gpu_available=False)
    records = []
    for item in first:
        if item.action != "run":
            continue
        status = "fail" if item.manifest_id == "web" else "pass"
        for n in range(failures if status == "fail" else 1):
            at = FAILED_AT - timedelta(hours=failures - 1 - n)
            records.append(
                record_for(store, item, status=status).model_copy(
                    update={"finished_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
                )
            )
    index = RecordIndex.from_records(records)
    return by_combo(
        plan(store, DIGESTS, index, gpu_available=False, now=now, backoff=Backoff(), **options)
    )[("web", "linux/amd64")]


def test_a_fresh_failure_waits_an_hour(tmp_path):
    item = planned(tmp_path, 1, FAILED_AT + timedelta(minutes=59))
    assert (item.action, item.reasons) == ("skip", ["failed_backoff"])
    assert (item.failures, item.retry_at) == (1, "2026-11-27T13:00:00Z")


def test_after_the_backoff_it_runs_again_without_rebuilding(tmp_path):
    item = planned(tmp_path, 1, FAILED_AT + timedelta(hours=1))
    assert (item.action, item.reasons, item.rebuild) == ("run", ["last_failed"], False)


def test_the_third_failure_waits_four_hours(tmp_path):
    waiting = planned(tmp_path, 3, FAILED_AT + timedelta(hours=3, minutes=59))
    assert (waiting.action, waiting.failures, waiting.retry_at) == (
        "skip",
        3,
        "2026-11-27T16:00:00Z",
    )
    assert planned(tmp_path / "b", 3, FAILED_AT + timedelta(hours=4)).action == "run"


@pytest.mark.parametrize("option", ["retry_failed", "force"])
def test_retry_failed_and_force_try_at_once(tmp_path, option):
    item = planned(tmp_path, 1, FAILED_AT + timedelta(minutes=1), **{option: True})
    assert item.action == "run" and item.reasons[0] == "last_failed"


def test_each_retry_after_a_backoff_is_its_own_sensor_run(tmp_path):
    """The record key alone would dedupe the retry against the failed run."""
    from sensors.common import run_request

    first = planned(tmp_path, 1, FAILED_AT + timedelta(hours=1))
    second = planned(tmp_path / "b", 2, FAILED_AT + timedelta(hours=2))
    keys = {run_request(first).run_key, run_request(second).run_key}
    assert keys == {f"{first.record_key}:retry-1", f"{first.record_key}:retry-2"}
