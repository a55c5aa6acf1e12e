"""When an alert goes out: the once-until-cleared latch, regressions, the stable cache ratio, and
the alert settings' checks."""

import pytest

from factory.records.model import ErrorInfo
from factory.report.alert_conditions import Latch, cache_ratio, record_links, regression_alert
from factory.report.alerts import AlertSettings, shown_url
from factory.settings import SettingsError
from tests.unit.records.test_records import make_record

SETTINGS = AlertSettings(webhook_url="http://127.0.0.1:9/hook", dagster_url="http://ui:3000")


def test_latch_alerts_once_and_again_only_after_clearing():
    store: dict[str, str] = {}
    latch = Latch(get=lambda keys: {k: store[k] for k in keys if k in store}, set=store.update)
    seen = [
        latch.update("queue_backlog:arm64", active)
        for active in (False, True, True, True, False, False, True, True)
    ]
    assert seen == [False, True, False, False, False, False, True, False]
    assert latch.update("queue_backlog:amd64", True)  # each condition on its own


@pytest.mark.parametrize(
    ("previous", "status", "alerts"),
    [
        ("pass", "fail", True),
        ("pass", "error", True),
        ("fail", "fail", False),  # a repeated failure
        ("error", "fail", False),
        (None, "fail", False),  # a first record is not a regression
        ("pass", "pass", False),
        ("fail", "pass", False),
    ],
)
def test_regression_is_pass_then_failure(previous, status, alerts):
    error = None if status == "pass" else ErrorInfo(stage="test", message="smoke (exit 1)\nmore")
    record = make_record(status=status, error=error)
    before = make_record(status=previous) if previous else None
    links = record_links(record, lambda kind, build_id: f"file:///{kind}/{build_id}")
    alert = regression_alert(record, before, SETTINGS, links)
    assert (alert is not None) is alerts
    if alert:
        body = alert.payload()
        assert body["kind"] == "regression" and body["build_id"] == record.build_id
        assert (body["manifest"], body["platform"], body["pool"]) == (
            "llm_factory",
            "linux/arm64",
            "arm64",
        )
        assert body["text"].endswith(f"went from pass to {status} (stage test): smoke (exit 1)")
        assert body["links"]["error"] == f"file:///error/{record.build_id}"
        assert body["details"]["previous_build_id"] == before.build_id


def test_cache_ratio_weighs_every_stable_step():
    assert cache_ratio([(2, 2), (2, 0)]) == 0.5
    assert cache_ratio([(3, 3)]) == 1.0
    assert cache_ratio([]) is None


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"FACTORY_ALERT_WEBHOOK_URL": "hooks.slack.com/x"}, "not an http(s) URL with a host"),
        ({"FACTORY_ALERT_WEBHOOK_URL": "http://" + "a" * 3000}, "at most 2048"),
        ({"FACTORY_ALERT_WEBHOOK_URL": "http://h/\x1b[31m"}, "control characters"),
        ({"FACTORY_DAGSTER_URL": "javascript:alert(1)"}, "FACTORY_DAGSTER_URL"),
        ({"FACTORY_ALERT_CACHE_RATIO": "-0.1"}, "FACTORY_ALERT_CACHE_RATIO"),
        ({"FACTORY_ALERT_RETRIES": "1e9"}, "FACTORY_ALERT_RETRIES"),
        ({"FACTORY_ALERT_TIMEOUT_S": "inf"}, "FACTORY_ALERT_TIMEOUT_S"),
    ],
)
def test_unusable_settings_are_errors_naming_the_variable(env, words):
    with pytest.raises(SettingsError, match=r"FACTORY_\w+") as caught:
        AlertSettings.from_env(env)
    assert words in str(caught.value)
    assert "\x1b" not in str(caught.value)


def test_defaults_and_the_url_shown_in_logs():
    settings = AlertSettings.from_env({})
    assert settings.webhook_url is None and settings.queue_age_s == 1800.0
    assert (settings.cache_ratio, settings.cache_builds) == (0.5, 10)
    assert shown_url("https://user:secret@hooks.example:8443/T000/B000/XXXX?x=1") == (
        "https://hooks.example:8443"
    )
