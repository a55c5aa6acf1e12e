"""Alerts against a real HTTP receiver the test starts (tests/integration/webhook_receiver.py).

Builds run for real (the `build_linux_amd64` job on the local engine and registry, in-process
against a temporary instance) and the sensors are evaluated on real runs and real queues, as the
daemon would. Each kind must arrive once, with its fields; a repeated failure must not alert
again; a webhook that is down must not change a build's outcome. The executor-lost alert is
checked where an executor is really lost: tests/integration/dagster/test_executor_loss.py.
"""

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from factory.platforms import BY_NAME
from factory.records.store import LocalRecordStore
from sensors.queue_backlog_sensor import queue_backlog_sensor
from tests.integration.dagster.test_dead_letters import execute_build, unreachable_registry_letter
from tests.integration.dagster.test_queue_metrics import NOW, add_run
from tests.integration.stores import EXAMPLE, example_store_copy, manifest
from tests.integration.webhook_receiver import CLOSED_URL, webhook_receiver

pytestmark = pytest.mark.integration
AMD64 = BY_NAME["linux/amd64"]
SUITE = "tests/flip.sh"
PASSING = "#!/bin/sh\necho ok {salt}\n"
FAILING = "#!/bin/sh\necho 'broken {salt}' >&2\nexit 1\n"


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def receiver(monkeypatch):
    with webhook_receiver() as server:
        monkeypatch.setenv("FACTORY_ALERT_WEBHOOK_URL", server.url)
        monkeypatch.setenv("FACTORY_ALERT_RETRY_DELAY_S", "0.1")
        monkeypatch.setenv("FACTORY_DAGSTER_URL", "http://dagster.example:3000/")
        yield server


def build(instance, store: Path, data_dir: Path, registry: str, manifest_id: str):
    """One real run of `build_linux_amd64` for `manifest_id`; (success, run id, step log text)."""
    result = execute_build(instance, store, data_dir, registry, manifest_id, retry_policy=None)
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    return result.success, result.run_id, "\n".join(messages)


def newest_record(data_dir: Path, manifest_id: str):
    records = [r for r in LocalRecordStore(data_dir).records() if r.manifest_id == manifest_id]
    return max(records, key=lambda r: r.finished_at)


def test_regression_alerts_once_per_pass_to_failure(
    services, instance, receiver, tmp_path, monkeypatch
):
    monkeypatch.setenv("FACTORY_ALERT_CACHE_RATIO", "0")  # never below: only regressions here
    store = example_store_copy(
        tmp_path,
        {"flaky": manifest(tests=["flip"])},
        suites={"flip": {"path": SUITE, "timeout_s": 30}},
        files={SUITE: PASSING.format(salt=0)},
    )
    data = tmp_path / "data"
    outcomes = []
    # pass, fail (alert), fail again (no alert), pass, fail (alert): each suite edit is a
    # new record key, so each is a real re-test of the same image.
    for n, script in enumerate([PASSING, FAILING, FAILING, PASSING, FAILING]):
        (store.parent / SUITE).write_text(script.format(salt=n))
        success, run_id, _ = build(instance, store, data, services.registry, "flaky")
        record = newest_record(data, "flaky")
        assert record.dagster.run_id == run_id
        outcomes.append((success, record.status, record.build_id, run_id))

    assert [o[1] for o in outcomes] == ["pass", "fail", "fail", "pass", "fail"]
    alerts = receiver.of_kind("regression")
    assert [a["build_id"] for a in alerts] == [outcomes[1][2], outcomes[4][2]]
    assert receiver.bodies == alerts  # nothing else was sent
    first = alerts[0]
    assert (first["manifest"], first["platform"], first["pool"]) == (
        "flaky",
        "linux/amd64",
        "amd64",
    )
    assert "flaky on linux/amd64 went from pass to fail" in first["text"]
    assert first["text"].startswith("[factory regression]")
    assert first["details"]["previous_build_id"] == outcomes[0][2]
    assert first["links"]["run"] == f"http://dagster.example:3000/runs/{outcomes[1][3]}"
    for name in ("record", "evidence", "error"):
        assert Path(first["links"][name].removeprefix("file://")).exists(), name


def cold_security(version: str) -> dict:
    """A security fragment no build cache has seen: its layer (and every later one) is built."""
    rel = f"modules/security/{version}.Dockerfile"
    salt = f"RUN echo 'security salt {uuid.uuid4().hex}' > /etc/salt\n"
    return {"rel": rel, "text": salt + (EXAMPLE / "modules/security/0.1.0.Dockerfile").read_text()}


def test_cache_ratio_alerts_once_until_cleared_and_a_down_webhook_fails_nothing(
    services, instance, receiver, tmp_path, monkeypatch
):
    monkeypatch.setenv("FACTORY_ALERT_CACHE_RATIO", "0.5")
    monkeypatch.setenv("FACTORY_ALERT_CACHE_BUILDS", "1")
    versions = ["9.0.1", "9.0.2", "9.0.3"]
    salts = {v: cold_security(v) for v in versions}

    def fragments(version: str) -> dict:
        return {"security": version, "core": "0.1.0", "light": "0.1.0"}

    # cold_a: cold (alert); cold_b: cold again, still below (no alert); warm_b: the same stable
    # layers as cold_b, all cached (clears); cold_c: cold with the webhook down (not delivered,
    # the build still passes).
    manifests = {
        "cold_a": manifest(fragments=fragments("9.0.1")),
        "cold_b": manifest(fragments=fragments("9.0.2")),
        "warm_b": manifest(fragments=fragments("9.0.2")),
        "cold_c": manifest(fragments=fragments("9.0.3")),
    }
    store = example_store_copy(
        tmp_path,
        manifests,
        modules={"security": {v: {"path": salts[v]["rel"]} for v in versions}},
        files={s["rel"]: s["text"] for s in salts.values()},
    )
    data = tmp_path / "data"
    logs = {}
    for manifest_id in manifests:
        if manifest_id == "cold_c":
            monkeypatch.setenv("FACTORY_ALERT_WEBHOOK_URL", CLOSED_URL)
        success, _, logs[manifest_id] = build(instance, store, data, services.registry, manifest_id)
        assert success, logs[manifest_id][-3000:]
        assert newest_record(data, manifest_id).status == "pass"

    alerts = receiver.of_kind("cache_ratio")
    assert len(alerts) == 1 and receiver.bodies == alerts
    [alert] = alerts
    assert (alert["manifest"], alert["platform"], alert["pool"]) == (
        "cold_a",
        "linux/amd64",
        "amd64",
    )
    assert alert["build_id"] == newest_record(data, "cold_a").build_id
    assert alert["details"] == {"ratio": 0.0, "builds": 1, "threshold": 0.5}
    assert "stable-layer cache hit ratio 0%" in alert["text"]
    assert (
        "alert cache_ratio not delivered to http://127.0.0.1:1 after 3 attempts" in (logs["cold_c"])
    )
    assert "/hooks/alerts" not in logs["cold_c"]  # the URL's path is not logged


def test_dead_letter_alerts_once(services, instance, receiver, tmp_path):
    # Two sensor evaluations of the same failed run: one letter, one alert.
    _, _, letter = unreachable_registry_letter(instance, tmp_path)
    [alert] = receiver.bodies
    assert alert["kind"] == "dead_letter"
    assert (alert["manifest"], alert["platform"], alert["pool"]) == (
        "retry_me",
        "linux/amd64",
        "amd64",
    )
    assert alert["build_id"] == letter["key"] == letter["build_id"]
    assert alert["links"]["dead_letter"].endswith(f"/dlq/{letter['key']}.json")
    assert alert["links"]["run"].endswith(f"/runs/{letter['run_id']}")
    assert f"factory dlq requeue {letter['key']}" in alert["text"]


def test_queue_backlog_alerts_once_until_the_queue_catches_up(instance, receiver, monkeypatch):
    monkeypatch.setenv("FACTORY_ALERT_QUEUE_AGE_S", "60")

    def tick() -> None:
        queue_backlog_sensor(dg.build_sensor_context(instance=instance))

    def queued(ago_s: float) -> dg.DagsterRun:
        # add_run counts from the time its module was imported; count from now.
        drift = (datetime.now(UTC) - NOW).total_seconds()
        return add_run(
            instance, dg.DagsterRunStatus.QUEUED, pool="arm64", created_ago_s=ago_s - drift
        )

    queued(30)
    tick()
    assert receiver.bodies == []  # 30 s is within the limit
    old = queued(600)
    tick()
    tick()  # still backed up: no second alert
    [alert] = receiver.bodies
    assert (alert["kind"], alert["pool"], alert["details"]["queued"]) == (
        "queue_backlog",
        "arm64",
        2,
    )
    assert alert["details"]["oldest_queued_s"] >= 600
    assert alert["manifest"] is None and alert["build_id"] is None
    instance.delete_run(old.run_id)
    tick()  # caught up: cleared
    queued(900)
    tick()
    assert [a["kind"] for a in receiver.bodies] == ["queue_backlog", "queue_backlog"]


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("FACTORY_ALERT_WEBHOOK_URL", "ftp://host/x", "not an http(s) URL"),
        ("FACTORY_ALERT_WEBHOOK_URL", "http://host:port/x", "is not a URL"),
        ("FACTORY_ALERT_WEBHOOK_URL", "http://ho st/x", "spaces or control characters"),
        ("FACTORY_ALERT_QUEUE_AGE_S", "nan", "is not seconds"),
        ("FACTORY_ALERT_CACHE_RATIO", "1.5", "is not a ratio"),
        ("FACTORY_ALERT_CACHE_BUILDS", "ten", "is not a number of builds"),
    ],
)
def test_bad_alert_settings_name_the_variable(monkeypatch, name, value, words):
    from factory.report.alerts import AlertSettings
    from factory.settings import SettingsError

    monkeypatch.setenv("FACTORY_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/x")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name) as caught:
        AlertSettings.from_env()
    assert words in str(caught.value)


def test_webhook_answers_never_raise(receiver):
    """Error statuses are retried then logged; nothing raises whatever the endpoint answers."""
    from factory.report.alerts import Alert, AlertSettings, send

    lines: list[str] = []
    settings = AlertSettings(webhook_url=receiver.url, retries=1, retry_delay_s=0.0)
    receiver.status = 500
    assert not send(Alert(kind="queue_backlog", text="x"), settings, lines.append)
    assert len(receiver.bodies) == 2 and "HTTP 500" in lines[-1]
    receiver.status = 302
    assert not send(Alert(kind="queue_backlog", text="y"), settings, lines.append)
    assert "HTTP 302" in lines[-1]
    slow = AlertSettings(webhook_url="http://10.255.255.1/x", retries=0, timeout_s=0.3)
    assert not send(Alert(kind="queue_backlog", text="z"), slow, lines.append)
    assert "not delivered" in lines[-1]
    assert json.dumps(receiver.bodies)  # what arrived is the JSON we sent
