"""Local services for the embedded default: Docker Engine, registry, qemu emulation, base images.

`up` makes each part answer, starting only what is missing: Debian's `dockerd` and
`docker-registry` with their state under the data dir, qemu-user-static through binfmt_misc, and
the offline busybox base image for linux/amd64 and linux/arm64. What it starts is recorded (PID and
start time) in `<data_dir>/services.json`; `down` stops exactly those processes and nothing else.
Engines and registries someone else runs are used as they are and never stopped.

This module runs the parts in order and reports on them; each part lives in its own module
(`local_engine`, `local_registry`, `qemu`, `base_images`, with `processes` for what we start).
The names other code imports from here are re-exported so `factory.services.embedded` stays the one
API.
"""

import os

from factory.errors import FactoryError, ServiceError
from factory.registry.client import RegistryClient
from factory.services.base_images import (
    BASE_PLATFORMS,
    BASE_REPOSITORY,
    BASE_TAG,
    BaseImage,
    assemble_image,
    base_platforms,
    base_up,
    build_base_image,
    busybox_layer,
)
from factory.services.busybox_package import BASE_PACKAGE
from factory.services.host_commands import STANDARD_PATH
from factory.services.local_broker import STATE_NAME as BROKER_STATE_NAME
from factory.services.local_broker import broker_state, broker_up
from factory.services.local_engine import (
    DEFAULT_DOCKER_HOST,
    DOCKER_CLI,
    answering_engine,
    engine_detail,
    engine_up,
    gpu_runtime_available,
    no_engine_message,
)
from factory.services.local_registry import REGISTRY_PING_TIMEOUT_S, registry_detail, registry_up
from factory.services.processes import forget, is_running, locked, read_state, stop, unmount_under
from factory.services.qemu import qemu_state, qemu_up
from factory.services.state import Echo, ServicePaths, ServiceState
from factory.settings import Settings

__all__ = [
    "BASE_PACKAGE",
    "BASE_PLATFORMS",
    "BASE_REPOSITORY",
    "BASE_TAG",
    "DEFAULT_DOCKER_HOST",
    "DOCKER_CLI",
    "STANDARD_PATH",
    "BaseImage",
    "Echo",
    "ServiceState",
    "assemble_image",
    "build_base_image",
    "busybox_layer",
    "docker_host",
    "down",
    "gpu_runtime_available",
    "status",
    "up",
]


def docker_host(settings: Settings) -> str:
    """The engine Factory uses: DOCKER_HOST, else the default socket, else the project's own."""
    env_host = os.environ.get("DOCKER_HOST")
    if env_host:
        return env_host
    paths = ServicePaths(settings.data_dir)
    engine = answering_engine(paths)
    if engine is None:
        raise ServiceError(no_engine_message(paths))
    return engine[0]


def up(settings: Settings, *, echo: Echo = print, celery: bool = False) -> list[ServiceState]:
    """Make the engine, registry, qemu and base images ready, starting only what is
    missing;
    with `celery`, the Celery broker too (Debian's redis-server, see
    `factory.services.local_broker`)."""
    paths = ServicePaths(settings.data_dir)
    with locked(paths):
        workers = workers_up()  # first: its imports overlap the rest
        states = [
            engine_up(paths, echo),
            registry_up(settings, paths, echo),
            qemu_up(echo),
        ]
        states.extend(base_up(settings, echo))
        if celery:
            states.append(broker_up(paths, echo))
    states.append(workers)
    return states


def workers_up() -> ServiceState:
    """The resident worker server of `factory run` (factory/workers/resident.py), started when
    none runs for this interpreter and settings; it imports while the other services start."""
    from factory.workers.resident import ResidentUnavailable, ensure_server_started

    try:
        address, started = ensure_server_started()
    except ResidentUnavailable as exc:
        return ServiceState("workers", True, f"no resident worker server ({exc})")
    except FactoryError as exc:  # a bad FACTORY_WORKER_IDLE_S
        return ServiceState("workers", False, str(exc))
    except OSError as exc:
        return ServiceState("workers", False, f"the resident worker server cannot start: {exc}")
    how = "started" if started else "running"
    return ServiceState("workers", True, f"resident worker server {how} at {address}", started)


def workers_down(echo: Echo) -> ServiceState:
    from factory.workers.resident import stop_servers

    done = stop_servers()
    for line in done:
        echo(f"workers: {line}")
    detail = "; ".join(done) or "no resident worker server ran"
    return ServiceState("workers", True, detail, changed=bool(done))


def workers_status() -> ServiceState:
    from factory.workers.resident import running_servers

    servers = running_servers()
    if not servers:
        return ServiceState("workers", True, "no resident worker server (`factory run` starts one)")
    shown = ", ".join(f"pid {s['pid']} at {s['socket']}" for s in servers)
    return ServiceState("workers", True, f"resident worker server(s): {shown}")


def celery_configured() -> bool:
    """Whether this host is set up for Celery mode (its broker is then worth reporting)."""
    return bool(
        os.environ.get("FACTORY_CELERY_BROKER")
        or (os.environ.get("FACTORY_EXECUTOR") or "").strip().lower() == "celery"
    )


def down(settings: Settings, *, echo: Echo = print) -> list[ServiceState]:
    """Stop the broker, registry and dockerd that `up` started (by PID); data stays in place."""
    paths = ServicePaths(settings.data_dir)
    states = []
    with locked(paths):
        for name, label in (
            (BROKER_STATE_NAME, "broker"),
            ("registry", "registry"),
            ("dockerd", "engine"),
        ):
            record = read_state(paths).get(name)
            if record is None and name == BROKER_STATE_NAME:
                continue  # Celery mode was never started here: nothing to report
            if record is None:
                states.append(ServiceState(label, True, "not started by factory: left alone"))
                continue
            if is_running(record):
                echo(f"{label}: stopping {name} (pid {record['pid']})")
                how = stop(record)
                detail = f"stopped {name} (pid {record['pid']}, {how})"
            else:
                detail = f"{name} (pid {record['pid']}) was no longer running"
            if name == "dockerd":
                # A dockerd that was killed leaves its private bind mounts behind.
                unmount_under(paths.docker_dir / "data", paths.exec_root)
            forget(paths, name)
            echo(f"{label}: {detail}")
            states.append(ServiceState(label, True, detail, changed=True))
        states.append(workers_down(echo))
    return states


def status(settings: Settings) -> list[ServiceState]:
    """Report each part: engine (version, socket), registry, qemu binfmt, base image digests."""
    paths = ServicePaths(settings.data_dir)
    started = read_state(paths)
    states = []
    try:
        engine = answering_engine(paths)
        if engine is None:
            states.append(ServiceState("engine", False, no_engine_message(paths)))
        else:
            states.append(ServiceState("engine", True, engine_detail(*engine, started)))
    except ServiceError as exc:
        states.append(ServiceState("engine", False, str(exc)))

    client = RegistryClient(settings.registry, timeout=REGISTRY_PING_TIMEOUT_S)
    registry_ok = False
    try:
        client.ping()
        registry_ok = True
        states.append(ServiceState("registry", True, registry_detail(settings, started)))
    except FactoryError as exc:
        states.append(ServiceState("registry", False, str(exc)))

    states.append(qemu_state())
    if BROKER_STATE_NAME in started or celery_configured():
        states.append(broker_state(paths))

    offered: dict[str, str] = {}
    problem = f"registry {settings.registry} does not answer"
    if registry_ok:
        try:
            offered = base_platforms(client)
            problem = "missing: run `factory services up`"
        except FactoryError as exc:
            problem = str(exc)
    ref = f"{settings.registry}/{BASE_REPOSITORY}:{BASE_TAG}"
    for oci_platform in BASE_PLATFORMS:
        digest = offered.get(oci_platform)
        detail = f"{ref} {oci_platform}: {digest or problem}"
        states.append(ServiceState(f"base {oci_platform}", digest is not None, detail))
    states.append(workers_status())
    return states
