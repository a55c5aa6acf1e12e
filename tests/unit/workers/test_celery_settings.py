"""Celery mode's pure rules: queues, priorities, settings, worker names, idle time, options."""

import socket

import pytest
from click.testing import CliRunner

from factory.cli.main import main
from factory.errors import FactoryError
from factory.platforms import PLATFORMS
from factory.services.local_broker import broker_answers, broker_problem
from factory.workers import celery_settings as cs
from factory.workers.celery_worker import validate_options

REDIS = "redis://127.0.0.1:6379/0"
AMQP = "amqp://guest@broker:5672//"


def test_each_pool_is_its_own_queue():
    assert cs.POOLS == ("amd64", "arm64", "gpu")
    assert {p.pool: cs.queue_for_pool(p.pool) for p in PLATFORMS} == {
        "amd64": "amd64",
        "arm64": "arm64",
        "gpu": "gpu",
    }
    with pytest.raises(FactoryError, match="unknown pool 'x86'"):
        cs.queue_for_pool("x86")


def test_chain_steps_carry_their_pool_queue_and_placement():
    from factory_assets.platforms import chain_op_tags, k8s_op_tags

    for platform in PLATFORMS:
        tags = chain_op_tags(platform)
        assert tags[cs.QUEUE_TAG] == platform.pool
        assert tags["dagster-k8s/config"] == k8s_op_tags(platform)["dagster-k8s/config"]


@pytest.mark.parametrize(
    ("broker", "high", "normal", "low"),
    [(REDIS, 0, 4, 9), ("rediss://h:6380/0", 0, 4, 9), (AMQP, 9, 5, 0)],
)
def test_high_priority_is_served_first_on_either_broker(broker, high, normal, low):
    got = [cs.celery_priority(u, broker) for u in (10, 0, -10)]
    assert got == [high, normal, low]
    # Redis pops lower numbers first, RabbitMQ higher ones: high priority wins on both.
    order = sorted([("high", got[0]), ("normal", got[1]), ("low", got[2])], key=lambda x: x[1])
    if cs.broker_kind(broker) == "amqp":
        order.reverse()
    assert [name for name, _ in order] == ["high", "normal", "low"]


def test_priority_stays_in_celery_range():
    for urgency in (-1000, -11, -1, 1, 3, 11, 1000):
        for broker in (REDIS, AMQP):
            assert 0 <= cs.celery_priority(urgency, broker) <= 9


def test_run_urgency_from_tags():
    from factory.plan.decisions import PlanItem
    from factory_assets.jobs import run_tags

    assert cs.run_urgency({}) == 0
    assert cs.run_urgency({"dagster/priority": "10"}) == 10
    assert cs.run_urgency({"dagster/priority": "x"}) == 0
    # dagster-celery's own run tag wins when someone sets it.
    assert cs.run_urgency({"dagster/priority": "10", cs.RUN_PRIORITY_TAG: "-4"}) == -4
    fields = PlanItem.__dataclass_fields__
    base = {name: None for name in fields}
    base.update(
        manifest_id="m", platform="linux/amd64", pool="amd64", record_key="k", reasons=["new"]
    )
    high = PlanItem(**{**base, "priority": "high"})
    normal = PlanItem(**{**base, "priority": "normal"})
    assert cs.celery_priority(cs.run_urgency(run_tags(high)), REDIS) < cs.celery_priority(
        cs.run_urgency(run_tags(normal)), REDIS
    )


def test_broker_urls_and_kinds():
    assert cs.broker_url({}) == cs.DEFAULT_BROKER
    assert cs.broker_url({cs.BROKER_ENV: " redis://b:1/2 "}) == "redis://b:1/2"
    assert cs.backend_url({}) == cs.DEFAULT_BACKEND
    assert cs.broker_kind("pyamqp://x//") == "amqp"
    with pytest.raises(FactoryError, match="neither redis:// nor amqp://"):
        cs.broker_kind("sqs://queue")


def test_settings_ack_late_reject_on_loss_prefetch_one():
    config = cs.celery_config(REDIS, visibility_s=30)
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    transport = config["broker_transport_options"]
    assert transport["visibility_timeout"] == 30
    assert transport["unacked_restore_throttle"] == 1
    assert transport["priority_steps"] == list(range(10))
    # RabbitMQ redelivers on connection loss: no Redis-only options there.
    assert "visibility_timeout" not in cs.celery_config(AMQP)["broker_transport_options"]


def test_visibility_timeout_and_lease():
    assert cs.visibility_timeout_s({}) == cs.DEFAULT_VISIBILITY_TIMEOUT_S
    assert cs.visibility_timeout_s({cs.VISIBILITY_ENV: "12"}) == 12
    for bad in ("2", "soon", "-1"):
        with pytest.raises(FactoryError, match=cs.VISIBILITY_ENV):
            cs.visibility_timeout_s({cs.VISIBILITY_ENV: bad})
    # A lease is renewed several times within one timeout.
    assert cs.lease_renew_interval_s(60) * 3 < 60
    assert cs.lease_renew_interval_s(5) >= 1


def test_worker_node_names():
    assert cs.worker_node_name("amd64", None, "box1") == "amd64@box1"
    assert cs.worker_node_name("arm64", "pi-4", "box1") == "pi-4@box1"
    assert cs.worker_node_name("arm64", "pi@rack2", "box1") == "pi@rack2"
    for bad in ("a b", "-x", "x" * 64, "ok@"):
        with pytest.raises(FactoryError, match="worker name"):
            cs.worker_node_name("amd64", bad, "box1")


def test_idle_clock():
    clock = cs.IdleClock(started=100.0, max_idle_s=10)
    assert clock.idle_s(105) == 5 and not clock.should_exit(105)
    assert clock.should_exit(110)
    clock.observe(True, 108)  # a task arrived before the limit
    assert clock.busy and clock.idle_s(200) == 0 and not clock.should_exit(200)
    clock.observe(True, 300)
    clock.observe(False, 301)  # finished: idle counts from here
    assert clock.idle_s(305) == 4 and not clock.should_exit(310)
    assert clock.should_exit(311)
    forever = cs.IdleClock(started=0.0)
    assert not forever.should_exit(10**9)
    with pytest.raises(FactoryError, match="--max-idle"):
        cs.IdleClock(started=0.0, max_idle_s=0)


def _options(**overrides):
    values = {
        "pool": "amd64",
        "concurrency": 1,
        "max_idle_s": None,
        "docker_host": "unix:///x.sock",
        "data_dir": "/tmp/w",
        "name": None,
        "environ": {"FACTORY_HOST_NAME": "h1"},
    }
    values.update(overrides)
    return validate_options(**values)


def test_worker_options():
    options = _options(max_idle_s=10)
    assert (options.pool, options.node_name, options.max_idle_s) == ("amd64", "amd64@h1", 10)
    assert options.broker == cs.DEFAULT_BROKER
    env = {"FACTORY_HOST_NAME": "h1", "DOCKER_HOST": "tcp://e:2375", "FACTORY_DATA_DIR": "/d"}
    options = _options(docker_host=None, data_dir=None, environ=env)
    assert (options.docker_host, str(options.data_dir)) == ("tcp://e:2375", "/d")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pool": "riscv"}, "unknown pool"),
        ({"concurrency": 0}, "--concurrency"),
        ({"max_idle_s": -1}, "--max-idle"),
        ({"docker_host": None}, "--docker-host"),
        ({"data_dir": None}, "--data-dir"),
        ({"name": "bad name"}, "worker name"),
        ({"environ": {cs.BROKER_ENV: "sqs://q"}}, "neither redis"),
    ],
)
def test_worker_options_errors(overrides, message):
    with pytest.raises(FactoryError, match=message):
        _options(**overrides)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_worker_command_errors_are_messages_not_tracebacks(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["worker", "--pool", "sparc"])
    assert result.exit_code == 2 and "'sparc' is not one of 'amd64', 'arm64', 'gpu'" in (
        result.output
    )
    broker = f"redis://127.0.0.1:{_closed_port()}/0"
    result = runner.invoke(
        main,
        ["worker", "--pool", "amd64", "--docker-host", "unix:///nope.sock"],
        env={cs.BROKER_ENV: broker, "FACTORY_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 1
    assert f"the Celery broker at {broker} does not answer" in result.output
    assert "Traceback" not in result.output
    assert not broker_answers(broker, 0.5)
    assert "services up --celery" in (broker_problem(broker, 0.5) or "")


def test_executor_kinds():
    import dagster as dg

    from factory_assets.executor import EXECUTORS, executor_for_environment

    assert EXECUTORS == ("multiprocess", "in_process", "celery", "k8s")
    assert executor_for_environment({"FACTORY_EXECUTOR": "in_process"}) is dg.in_process_executor
    celery = executor_for_environment({"FACTORY_EXECUTOR": "celery", cs.BROKER_ENV: REDIS})
    assert celery.name == "factory_celery"
    with pytest.raises(FactoryError, match="FACTORY_CELERY_BROKER"):
        executor_for_environment({"FACTORY_EXECUTOR": "celery", cs.BROKER_ENV: "sqs://q"})
