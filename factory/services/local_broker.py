"""The Celery broker for the several-hosts shape: Debian's `redis-server`, started by the project.

`factory services up --celery` uses a broker that already answers at FACTORY_CELERY_BROKER, else
installs `redis-server` with apt and starts it on the broker URL's loopback address and port, with
its own config, data (append-only file, so queued tasks survive a broker restart) and log under
`<data_dir>/redis`. Its PID is recorded in `services.json` like the engine's and the registry's,
and `factory services down` stops it by that PID. A broker on another host is the operator's: it
is used, never started. Workers on other hosts reach a broker that listens on a routable address:
start it yourself with `bind` set, or put it behind a tunnel (docs/deploy.md).
"""

import contextlib
import socket
from urllib.parse import urlsplit

from factory.errors import ServiceError
from factory.registry.names import is_loopback
from factory.services.host_commands import ensure_installed
from factory.services.processes import is_running, read_state, refuse_if_running, start_service
from factory.services.state import Echo, ServicePaths, ServiceState
from factory.workers import celery_settings

STATE_NAME = "redis"
PING_TIMEOUT_S = 2.0
START_TIMEOUT_S = 20.0
DEFAULT_PORT = 6379


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORT


def broker_answers(url: str, timeout: float = PING_TIMEOUT_S) -> bool:
    """Whether a Redis server answers PING at `url` (a raw RESP exchange: no client needed)."""
    host, port = _address(url)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    # +PONG, or -NOAUTH / -ERR from a server that wants a password: a Redis server either way.
    return reply.startswith((b"+PONG", b"-NOAUTH", b"-ERR"))


def broker_problem(url: str, timeout: float = PING_TIMEOUT_S) -> str | None:
    """None when the broker at `url` answers, else a sentence saying what to do."""
    try:
        kind = celery_settings.broker_kind(url)
    except Exception as exc:  # FactoryError: an unusable URL
        return str(exc)
    if kind == "redis":
        if broker_answers(url, timeout):
            return None
    else:
        host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 5672
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
            return None
    return (
        f"the Celery broker at {url} does not answer: start it with "
        f"`factory services up --celery` on the broker host, or set "
        f"{celery_settings.BROKER_ENV} to a broker that runs"
    )


def broker_detail(url: str, started: dict) -> str:
    record = started.get(STATE_NAME)
    whose = ""
    if record and is_running(record):
        whose = f", started by factory (pid {record['pid']}, log {record['log']})"
    return f"Celery broker (Redis) at {url}{whose}"


def _config_text(paths: ServicePaths, host: str, port: int) -> str:
    data = paths.data_dir / "redis"
    return "\n".join(
        [
            f"bind {host}",
            "protected-mode yes",
            f"port {port}",
            "daemonize no",
            'logfile ""',
            f"dir {data}",
            # Queued tasks survive a broker restart; fsync once a second is Redis's own default.
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            # Celery's result keys expire; task queues must never be evicted.
            "maxmemory-policy noeviction",
            "",
        ]
    )


def broker_up(paths: ServicePaths, echo: Echo, url: str | None = None) -> ServiceState:
    """Make the broker at `url` (default FACTORY_CELERY_BROKER) answer, starting Redis if needed."""
    url = url or celery_settings.broker_url()
    try:
        kind = celery_settings.broker_kind(url)
    except Exception as exc:
        raise ServiceError(str(exc)) from exc
    started = read_state(paths)
    if broker_problem(url) is None:
        detail = broker_detail(url, started)
        echo(f"broker: using {detail}")
        return ServiceState("broker", True, detail)
    host, port = _address(url)
    if kind != "redis" or not is_loopback(f"{host}:{port}"):
        msg = (
            f"the Celery broker at {url} does not answer, and Factory only starts Redis on a "
            f"loopback address: start your broker, or unset {celery_settings.BROKER_ENV} to use "
            f"{celery_settings.DEFAULT_BROKER}"
        )
        raise ServiceError(msg)
    refuse_if_running(started, STATE_NAME, url)
    ensure_installed({"redis-server": "redis-server"}, echo)
    if broker_answers(url):
        # The Debian package may start its own server on 6379: use it, it is not ours to stop.
        detail = f"Celery broker (Redis) at {url} (started by the redis-server package)"
        echo(f"broker: using {detail}")
        return ServiceState("broker", True, detail, changed=True)
    folder = paths.data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "redis.conf"
    listen = "127.0.0.1" if host == "localhost" else host
    config.write_text(_config_text(paths, listen, port))
    log = folder / "redis.log"
    echo(f"broker: starting redis-server on {listen}:{port} (log: {log})")
    record, elapsed = start_service(
        paths,
        STATE_NAME,
        ["redis-server", str(config)],
        log,
        ready=lambda: broker_answers(url, 0.5),
        timeout=START_TIMEOUT_S,
    )
    echo(f"broker: ready in {elapsed:.1f} s (pid {record['pid']})")
    return ServiceState("broker", True, broker_detail(url, read_state(paths)), changed=True)


def broker_state(paths: ServicePaths, url: str | None = None) -> ServiceState:
    url = url or celery_settings.broker_url()
    problem = broker_problem(url)
    if problem:
        return ServiceState("broker", False, problem)
    return ServiceState("broker", True, broker_detail(url, read_state(paths)))
