"""Celery mode's settings and rules, without Dagster or Celery imports (fast, and unit-tested).

In the several-hosts shape each pool (`amd64`, `arm64`, `gpu`) is a Celery queue of the same name.
The run coordinator (`factory run`, the daemon's run workers) submits each combination's one step
to its pool's queue; `factory worker --pool P` consumes only that queue, on a host with its own
Docker Engine and data dir. Both sides build their Celery app from `celery_config()` below, so
they agree on the broker, priorities and acknowledgement rules.

Broker choice (Redis, `redis-server` from Debian, started by `factory services up --celery`):
Redis has no consumer connections that own deliveries, so a message a worker took but did not
acknowledge comes back only when its `visibility_timeout` has passed. Celery's default is one
hour: a killed worker's build would wait an hour. A short timeout alone would hand a long build
that is still running on a healthy worker to a second worker. Factory takes both: a short
visibility timeout (FACTORY_CELERY_VISIBILITY_TIMEOUT, default 60 s) and a lease that each
worker renews for the tasks it holds every RENEW_FRACTION of it, so only the tasks of a worker
that stopped renewing (killed, frozen, cut off longer than the timeout) are handed out again.
"""

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from factory.errors import FactoryError
from factory.platforms import PLATFORMS

BROKER_ENV = "FACTORY_CELERY_BROKER"
BACKEND_ENV = "FACTORY_CELERY_BACKEND"
VISIBILITY_ENV = "FACTORY_CELERY_VISIBILITY_TIMEOUT"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/1"
DEFAULT_VISIBILITY_TIMEOUT_S = 60.0
MIN_VISIBILITY_TIMEOUT_S = 5.0
# A lease is renewed this often, as a fraction of the visibility timeout.
RENEW_FRACTION = 0.25
# How often workers look for deliveries whose lease ran out (kombu's sweep; every sweep scans).
RESTORE_INTERVAL_S = 5

# Dagster's run tag for queue order (factory_assets.jobs.run_tags sets 10 for high priority).
DAGSTER_PRIORITY_TAG = "dagster/priority"
# dagster-celery's own tags: the queue a step goes to (op tag) and an explicit run priority.
QUEUE_TAG = "dagster-celery/queue"
RUN_PRIORITY_TAG = "dagster-celery/run_priority"

POOLS: tuple[str, ...] = tuple(dict.fromkeys(p.pool for p in PLATFORMS))
GPU_POOL = "gpu"
# Celery priority levels 0..9; Redis serves lower numbers first, RabbitMQ higher ones.
PRIORITY_LEVELS = 10
NORMAL_LEVEL = 5
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def queue_for_pool(pool: str) -> str:
    """The Celery queue of a pool: the pool's own name."""
    if pool not in POOLS:
        msg = f"unknown pool {pool!r}: the pools are {', '.join(POOLS)}"
        raise FactoryError(msg)
    return pool


def broker_url(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (env.get(BROKER_ENV) or "").strip() or DEFAULT_BROKER


def backend_url(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (env.get(BACKEND_ENV) or "").strip() or DEFAULT_BACKEND


def broker_kind(url: str) -> str:
    """`redis` or `amqp`; anything else is refused with the schemes that work."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("redis", "rediss"):
        return "redis"
    if scheme in ("amqp", "pyamqp", "amqps"):
        return "amqp"
    msg = (
        f"broker URL {url!r} is neither redis:// nor amqp://: set {BROKER_ENV} to e.g. "
        f"{DEFAULT_BROKER}"
    )
    raise FactoryError(msg)


def visibility_timeout_s(environ: dict[str, str] | None = None) -> float:
    env = os.environ if environ is None else environ
    raw = (env.get(VISIBILITY_ENV) or "").strip()
    if not raw:
        return DEFAULT_VISIBILITY_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < MIN_VISIBILITY_TIMEOUT_S:
        msg = f"{VISIBILITY_ENV}={raw!r}: give a number of seconds >= {MIN_VISIBILITY_TIMEOUT_S:g}"
        raise FactoryError(msg)
    return value


def lease_renew_interval_s(visibility_s: float) -> float:
    return max(1.0, visibility_s * RENEW_FRACTION)


def celery_priority(urgency: int, broker: str) -> int:
    """The Celery message priority for a run's urgency (Dagster's `dagster/priority`: higher runs
    sooner; high-priority manifests carry 10, normal ones 0).

    Levels go 0..9 around NORMAL_LEVEL (5): +10 is the most urgent, -10 the least. Redis serves
    lower numbers first, RabbitMQ higher ones, so the number is turned around for Redis.
    """
    level = min(PRIORITY_LEVELS - 1, max(0, NORMAL_LEVEL + urgency // 2))
    if broker_kind(broker) == "redis":
        return PRIORITY_LEVELS - 1 - level
    return level


def run_urgency(run_tags: dict[str, str]) -> int:
    """A run's urgency: dagster-celery's explicit run priority when set, else `dagster/priority`."""
    for tag in (RUN_PRIORITY_TAG, DAGSTER_PRIORITY_TAG):
        value = run_tags.get(tag)
        if value is None:
            continue
        try:
            return int(str(value).strip())
        except ValueError:
            continue
    return 0


def celery_config(
    broker: str, *, visibility_s: float = DEFAULT_VISIBILITY_TIMEOUT_S
) -> dict[str, object]:
    """Celery settings both the coordinator and the workers use (dagster-celery's config_source).

    - late acknowledgement and reject-on-worker-lost: a task is acknowledged only when its step
      finished; a worker whose process dies gives it back instead of losing it;
    - prefetch 1: a worker holds only the task it runs, so an idle worker of the pool takes the
      next one, and a killed worker strands at most its running tasks;
    - Redis: the visibility timeout with lease renewal (see the module doc), a restore sweep every
      RESTORE_INTERVAL_S, and ten priority levels instead of kombu's four.
    """
    config: dict[str, object] = {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        # A step is one process on one host: no retries at the Celery level (Dagster's
        # RetryPolicy retries transient trouble; a failing test is a result).
        "task_default_priority": NORMAL_LEVEL,
        "task_queue_max_priority": PRIORITY_LEVELS,
        "result_expires": 7 * 24 * 3600,
    }
    transport: dict[str, object] = {
        # dagster-celery's publish retries, kept.
        "max_retries": 3,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.5,
    }
    if broker_kind(broker) == "redis":
        transport.update(
            {
                "visibility_timeout": visibility_s,
                "unacked_restore_interval": RESTORE_INTERVAL_S,
                "unacked_restore_throttle": 1,
                "priority_steps": list(range(PRIORITY_LEVELS)),
                "queue_order_strategy": "priority",
                "socket_connect_timeout": 5,
            }
        )
        config["result_backend_transport_options"] = {"socket_connect_timeout": 5}
    config["broker_transport_options"] = transport
    return config


def worker_node_name(pool: str, name: str | None, host: str) -> str:
    """The Celery node name `NAME@HOST`; NAME defaults to the pool."""
    base = (name or pool).strip()
    if "@" in base:
        base, _, host = base.partition("@")
    if not NAME_PATTERN.match(base) or not host:
        msg = (
            f"worker name {name!r}: use letters, digits, '.', '_' or '-' (up to 63), "
            "optionally followed by @HOST"
        )
        raise FactoryError(msg)
    return f"{base}@{host}"


@dataclass
class IdleClock:
    """When a worker last had work, for `--max-idle` and `factory status`.

    `observe(busy, now)` is called with the worker's state (any task running or reserved) at a
    steady pace; the worker is idle since the last moment it was seen busy, or since it started.
    """

    started: float
    max_idle_s: float | None = None
    busy: bool = False
    idle_since: float | None = None

    def __post_init__(self) -> None:
        if self.max_idle_s is not None and self.max_idle_s <= 0:
            msg = f"--max-idle must be more than 0 seconds, not {self.max_idle_s:g}"
            raise FactoryError(msg)
        self.idle_since = self.started

    def observe(self, busy: bool, now: float) -> None:
        if busy:
            self.busy = True
            self.idle_since = None
        elif self.busy or self.idle_since is None:
            self.busy = False
            self.idle_since = now

    def idle_s(self, now: float) -> float:
        return 0.0 if self.busy or self.idle_since is None else max(0.0, now - self.idle_since)

    def should_exit(self, now: float) -> bool:
        return self.max_idle_s is not None and not self.busy and self.idle_s(now) >= self.max_idle_s
