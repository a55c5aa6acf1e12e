"""`factory worker`: a dagster-celery worker for one pool, on its own engine and data dir.

The worker is dagster-celery's own task (`execute_plan`, from `dagster_celery.tasks`) in a Celery
app built with the settings the coordinator uses (`factory.workers.celery_settings.celery_config`),
and consumes only its pool's queue. Before it starts it checks what it needs and says what is
wrong: the broker answers, its Docker Engine answers, and a GPU worker's engine has an NVIDIA
runtime.

Its environment names it: FACTORY_WORKER_NAME (the Celery node name) and FACTORY_EXECUTOR=celery,
which records put in their `executor` section, plus its own DOCKER_HOST and FACTORY_DATA_DIR. The
step processes (Celery's prefork children) inherit them.

A watcher thread in the worker's main process, where Celery keeps its request bookkeeping, keeps an
`IdleClock` (busy while a task runs or is reserved), ends the worker with a warm shutdown (exit 0)
after `--max-idle` seconds without work, and renews the Redis visibility lease of the tasks the
worker holds (see `factory.workers.celery_settings`). `factory status` asks every worker for its
state through the `factory_state` inspect command registered here.
"""

import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from factory.errors import FactoryError
from factory.safe_json import printable
from factory.workers import celery_settings

STATE_COMMAND = "factory_state"
WATCH_INTERVAL_S = 0.5
ENGINE_PING_TIMEOUT_S = 5.0
UNACKED_INDEX_KEY = "unacked_index"  # kombu's Redis transport default


@dataclass(frozen=True)
class WorkerOptions:
    pool: str
    concurrency: int
    max_idle_s: float | None
    docker_host: str
    data_dir: Path
    node_name: str
    broker: str
    backend: str
    visibility_s: float
    loglevel: str = "INFO"


@dataclass
class _Runtime:
    """What the worker's main process knows about itself, for the watcher and `factory_state`."""

    options: WorkerOptions
    clock: celery_settings.IdleClock
    engine_id: str | None
    last_heartbeat: float | None = None
    leases_renewed: int = 0
    stopping: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


_RUNTIME: _Runtime | None = None


def _flag_or_env(flag: str | None, env: dict[str, str], name: str, missing: str) -> str:
    """A flag's value, else the environment variable `name`; FactoryError(`missing`) if neither."""
    value = (flag or env.get(name) or "").strip()
    if not value:
        raise FactoryError(missing)
    return value


def validate_options(
    *,
    pool: str,
    concurrency: int,
    max_idle_s: float | None,
    docker_host: str | None,
    data_dir: str | None,
    name: str | None,
    loglevel: str = "INFO",
    environ: dict[str, str] | None = None,
) -> WorkerOptions:
    """The worker's options from its flags and the environment; FactoryError says what is wrong."""
    env = dict(os.environ if environ is None else environ)
    queue = celery_settings.queue_for_pool(pool)
    if concurrency < 1:
        msg = f"--concurrency must be at least 1, not {concurrency}"
        raise FactoryError(msg)
    if max_idle_s is not None and max_idle_s <= 0:
        msg = f"--max-idle must be more than 0 seconds, not {max_idle_s:g}"
        raise FactoryError(msg)
    host = _flag_or_env(
        docker_host,
        env,
        "DOCKER_HOST",
        "no Docker Engine for this worker: pass --docker-host unix:///path/docker.sock (or "
        "tcp://HOST:PORT), or set DOCKER_HOST",
    )
    folder = _flag_or_env(
        data_dir,
        env,
        "FACTORY_DATA_DIR",
        "no data dir for this worker: pass --data-dir DIR (each worker its own) or set "
        "FACTORY_DATA_DIR",
    )
    node_host = (env.get("FACTORY_HOST_NAME") or "").strip() or socket.gethostname()
    broker = celery_settings.broker_url(env)
    celery_settings.broker_kind(broker)
    return WorkerOptions(
        pool=queue,
        concurrency=concurrency,
        max_idle_s=max_idle_s,
        docker_host=host,
        data_dir=Path(folder).expanduser().resolve(),
        node_name=celery_settings.worker_node_name(pool, name, node_host),
        broker=broker,
        backend=celery_settings.backend_url(env),
        visibility_s=celery_settings.visibility_timeout_s(env),
        loglevel=loglevel.upper(),
    )


def engine_id_or_error(docker_host: str) -> str | None:
    """The ID of the engine at `docker_host`; FactoryError when it does not answer."""
    import docker
    import requests

    try:
        client = docker.DockerClient(base_url=docker_host, timeout=ENGINE_PING_TIMEOUT_S)
    except (docker.errors.DockerException, ValueError):  # ValueError: an unparsable address
        msg = (
            f"the Docker Engine at {printable(docker_host, limit=200)} does not answer: start it "
            "(`factory services up` on this host) or pass the right --docker-host"
        )
        raise FactoryError(msg) from None
    try:
        return client.info().get("ID")
    except (docker.errors.DockerException, requests.RequestException) as exc:
        msg = (
            f"the Docker Engine at {printable(docker_host, limit=200)} does not answer "
            f"({type(exc).__name__}): start it "
            "(`factory services up` on this host) or pass the right --docker-host"
        )
        raise FactoryError(msg) from None
    finally:
        client.close()


def preflight(options: WorkerOptions) -> str | None:
    """Check the broker, the engine and (for the GPU pool) the NVIDIA runtime; return engine ID."""
    from factory.services import embedded as services
    from factory.services.local_broker import broker_problem

    problem = broker_problem(options.broker)
    if problem:
        raise FactoryError(problem)
    engine_id = engine_id_or_error(options.docker_host)
    if options.pool == celery_settings.GPU_POOL and not services.gpu_runtime_available(
        options.docker_host
    ):
        msg = (
            f"the Docker Engine at {options.docker_host} has no NVIDIA runtime, so this host "
            "cannot run GPU builds: install the NVIDIA Container Toolkit and register its runtime "
            "with dockerd, or start this worker for another pool (--pool amd64 or arm64)"
        )
        raise FactoryError(msg)
    return engine_id


def _worker_environment(options: WorkerOptions) -> dict[str, str]:
    return {
        "DOCKER_HOST": options.docker_host,
        "FACTORY_DATA_DIR": str(options.data_dir),
        "FACTORY_WORKER_NAME": options.node_name,
        "FACTORY_EXECUTOR": "celery",
        celery_settings.BROKER_ENV: options.broker,
        celery_settings.BACKEND_ENV: options.backend,
        celery_settings.VISIBILITY_ENV: f"{options.visibility_s:g}",
    }


# -- in the worker's main process ----------------------------------------------------------------


def _held_requests() -> list:
    from celery.worker import state

    return [*state.active_requests, *state.reserved_requests]


def _tasks_done() -> int:
    from celery.worker import state

    return max(0, sum(state.total_count.values()) - len(state.active_requests))


def snapshot(now: float | None = None) -> dict:
    """This worker's state as `factory status` shows it."""
    runtime = _RUNTIME
    if runtime is None:
        return {}
    now = time.time() if now is None else now
    with runtime.lock:
        clock = runtime.clock
        busy = clock.busy
        idle_s = clock.idle_s(now)
        heartbeat = runtime.last_heartbeat
    options = runtime.options
    return {
        "name": options.node_name,
        "pool": options.pool,
        "busy": busy,
        "running": len(_held_requests()),
        "idle_s": round(idle_s, 1),
        "tasks_done": _tasks_done(),
        "concurrency": options.concurrency,
        "max_idle_s": options.max_idle_s,
        "docker_host": options.docker_host,
        "engine_id": runtime.engine_id,
        "pid": os.getpid(),
        "last_heartbeat": (
            datetime.fromtimestamp(heartbeat, UTC).isoformat(timespec="seconds")
            if heartbeat
            else None
        ),
        "answered_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
    }


def _renew_leases(client, requests: list) -> int:
    """Move the visibility deadline of the deliveries this worker holds to now (XX: only ones
    still unacknowledged, so an acknowledged or restored delivery is not brought back)."""
    tags = [r.message.delivery_tag for r in requests if getattr(r, "message", None) is not None]
    if not tags:
        return 0
    now = time.time()
    client.zadd(UNACKED_INDEX_KEY, dict.fromkeys(tags, now), xx=True)
    return len(tags)


def _watch(runtime: _Runtime) -> None:
    """Idle bookkeeping, `--max-idle` shutdown and lease renewal, until the worker stops."""
    import redis

    options = runtime.options
    lease_client = None
    if celery_settings.broker_kind(options.broker) == "redis":
        lease_client = redis.Redis.from_url(options.broker, socket_timeout=5)
    renew_every = celery_settings.lease_renew_interval_s(options.visibility_s)
    next_renewal = 0.0
    while not runtime.stopping:
        held = _held_requests()
        now = time.time()
        with runtime.lock:
            runtime.clock.observe(bool(held), now)
            idle_done = runtime.clock.should_exit(now)
        if lease_client is not None and held and time.monotonic() >= next_renewal:
            try:
                runtime.leases_renewed += _renew_leases(lease_client, held)
            except redis.RedisError:
                pass  # the broker is away: Celery reconnects; the next round renews
            next_renewal = time.monotonic() + renew_every
        if idle_done:
            runtime.stopping = True
            print(  # noqa: T201 - the worker's log is its standard output
                f"factory worker {options.node_name}: idle for {options.max_idle_s:g} s, "
                "shutting down",
                flush=True,
            )
            # Celery's warm shutdown: finish what runs (nothing), give back what is reserved.
            os.kill(os.getpid(), signal.SIGTERM)
            return
        time.sleep(WATCH_INTERVAL_S)


def _register_state_command() -> None:
    from celery.worker.control import inspect_command

    @inspect_command(name=STATE_COMMAND)
    def factory_state(state, **kwargs) -> dict:  # Celery's remote-control signature
        return snapshot()


def run_worker(options: WorkerOptions, engine_id: str | None) -> int:
    """Run the Celery worker until it is stopped or idle for --max-idle; its exit code."""
    global _RUNTIME

    os.environ.update(_worker_environment(options))
    options.data_dir.mkdir(parents=True, exist_ok=True)

    from celery import signals
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    # Loaded once here, before Celery forks its pool: every task then finds the code location.
    import factory_assets.definitions  # noqa: F401

    config = celery_settings.celery_config(options.broker, visibility_s=options.visibility_s)
    app = make_app(
        CeleryExecutor.for_cli(
            broker=options.broker, backend=options.backend, config_source=config
        ).app_args()
    )
    create_task(app)
    _register_state_command()
    _RUNTIME = _Runtime(
        options=options,
        clock=celery_settings.IdleClock(started=time.time(), max_idle_s=options.max_idle_s),
        engine_id=engine_id,
    )
    runtime = _RUNTIME

    def on_ready(**_kwargs) -> None:
        # Idle time counts from when the worker can take tasks, not from its imports.
        with runtime.lock:
            runtime.clock = celery_settings.IdleClock(
                started=time.time(), max_idle_s=options.max_idle_s
            )
        threading.Thread(target=_watch, args=(runtime,), name="factory-watch", daemon=True).start()

    def on_heartbeat(**_kwargs) -> None:
        runtime.last_heartbeat = time.time()

    def on_shutdown(**_kwargs) -> None:
        runtime.stopping = True

    signals.worker_ready.connect(on_ready, weak=False)
    signals.heartbeat_sent.connect(on_heartbeat, weak=False)
    signals.worker_shutting_down.connect(on_shutdown, weak=False)
    argv = [
        "worker",
        "--queues",
        options.pool,
        "--concurrency",
        str(options.concurrency),
        "--hostname",
        options.node_name,
        "--prefetch-multiplier",
        "1",
        "--events",
        "--without-mingle",
        "--without-gossip",
        "--pool",
        "prefork",
        "--loglevel",
        options.loglevel,
    ]
    try:
        app.worker_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
