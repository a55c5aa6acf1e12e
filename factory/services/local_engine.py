"""The Docker Engine Factory builds on: found where it answers, else started as our own dockerd.

DOCKER_HOST wins when set; otherwise the system socket, then the project's own dockerd under the
data dir. `engine_up` installs Debian's docker.io (its 20.10 client is the one that runs BuildKit
builds without buildx) and starts dockerd only when no engine answers, so an engine someone else
runs is used as it is and never stopped.
"""

import contextlib
import os
from pathlib import Path

import docker
import requests

from factory.errors import ServiceError
from factory.safe_json import exception_line, printable
from factory.services.host_commands import ensure_installed
from factory.services.processes import (
    is_running,
    read_state,
    refuse_if_running,
    start_service,
    unmount_under,
)
from factory.services.state import Echo, ServicePaths, ServiceState

# Timeouts, in seconds.
ENGINE_PING_TIMEOUT_S = 3.0
ENGINE_START_TIMEOUT_S = 60.0

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# Debian's docker.io client runs BuildKit builds on a 20.10 engine; newer static clients without
# buildx refuse BuildKit, and Debian 12 has no buildx package.
DOCKER_CLI = "/usr/bin/docker"
# sun_path holds 108 bytes; keep a margin for the engine's own sockets next to ours.
MAX_SOCKET_PATH = 100


def gpu_runtime_available(docker_host: str) -> bool:
    """Whether the engine at `docker_host` has the NVIDIA runtime (so GPU work can run there)."""
    try:
        with contextlib.closing(_engine_api(docker_host, ENGINE_PING_TIMEOUT_S)) as api:
            runtimes = api.info().get("Runtimes") or {}
    except (docker.errors.DockerException, requests.RequestException) as exc:
        msg = (
            f"Docker Engine at {printable(docker_host, limit=200)} does not answer "
            f"({exception_line(exc)}): see `factory services status`"
        )
        raise ServiceError(msg) from exc
    return "nvidia" in runtimes


def _engine_api(host: str, timeout: float) -> docker.APIClient:
    # "auto" asks the engine for its API version: Debian's 20.10 speaks 1.41, older than the SDK.
    try:
        return docker.APIClient(base_url=host, version="auto", timeout=timeout)
    except ValueError as exc:  # urllib's, on an address it cannot parse ("tcp://[::1")
        msg = f"not a Docker host address: {exc}"
        raise docker.errors.DockerException(msg) from None


def _engine_version(host: str, timeout: float = ENGINE_PING_TIMEOUT_S) -> str | None:
    """The engine's version if it answers `/_ping` at `host`, else None."""
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).is_socket():
        return None
    try:
        with contextlib.closing(_engine_api(host, timeout)) as api:
            api.ping()
            return api.version().get("Version", "unknown")
    except (docker.errors.DockerException, requests.RequestException):
        return None


def no_engine_message(paths: ServicePaths) -> str:
    return (
        f"no Docker Engine answers at {DEFAULT_DOCKER_HOST} or {paths.docker_host}: "
        "run `factory services up` to start one, or set DOCKER_HOST to an engine you run"
    )


def engine_detail(host: str, version: str, started: dict) -> str:
    record = started.get("dockerd")
    whose = ""
    if record and record.get("host") == host and is_running(record):
        whose = f", dockerd started by factory (pid {record['pid']}, log {record['log']})"
    return f"Docker Engine {version} at {host}{whose}"


def answering_engine(paths: ServicePaths) -> tuple[str, str] | None:
    """(host, version) of the engine to use without starting one, or None."""
    env_host = os.environ.get("DOCKER_HOST")
    for host in (env_host,) if env_host else (DEFAULT_DOCKER_HOST, paths.docker_host):
        version = _engine_version(host)
        if version is not None:
            return host, version
    if env_host:
        msg = (
            f"DOCKER_HOST={printable(env_host, limit=200)} does not answer: start that engine, "
            "or unset DOCKER_HOST so that `factory services up` uses the default socket or "
            "starts its own dockerd"
        )
        raise ServiceError(msg)
    return None


def engine_up(paths: ServicePaths, echo: Echo) -> ServiceState:
    # Builds need Debian's 20.10 client (BuildKit without buildx), whichever engine they use.
    installed = ensure_installed({DOCKER_CLI: "docker.io"}, echo)
    engine = answering_engine(paths)
    if engine is None and ensure_installed({"dockerd": "docker.io"}, echo):
        installed = True
        # The package's own init script may have started the system engine.
        engine = answering_engine(paths)
    started = read_state(paths)
    if engine is not None:
        detail = engine_detail(*engine, started)
        if os.environ.get("DOCKER_HOST"):
            detail += " (DOCKER_HOST)"
        echo(f"engine: using {detail}")
        return ServiceState("engine", True, detail, changed=installed)

    refuse_if_running(started, "dockerd", paths.docker_host)
    if len(str(paths.docker_socket)) > MAX_SOCKET_PATH:
        msg = (
            f"the engine socket path {paths.docker_socket} is longer than unix sockets allow: "
            "set FACTORY_DATA_DIR to a shorter folder, or DOCKER_HOST to an engine you run"
        )
        raise ServiceError(msg)
    data_root = paths.docker_dir / "data"
    data_root.mkdir(parents=True, exist_ok=True)
    paths.exec_root.mkdir(parents=True, exist_ok=True)
    # A dockerd that was killed or failed to start leaves bind mounts on its data root;
    # a new one would stack its own on top of them.
    unmount_under(data_root, paths.exec_root)
    argv = [
        "dockerd",
        "--host",
        paths.docker_host,
        "--data-root",
        str(data_root),
        "--exec-root",
        str(paths.exec_root),
        "--pidfile",
        str(paths.docker_dir / "dockerd.pid"),
    ]
    log = paths.docker_dir / "dockerd.log"
    echo(f"engine: starting dockerd at {paths.docker_host} (log: {log})")
    record, elapsed = start_service(
        paths,
        "dockerd",
        argv,
        log,
        ready=lambda: _engine_version(paths.docker_host) is not None,
        timeout=ENGINE_START_TIMEOUT_S,
        on_failure=lambda: unmount_under(data_root, paths.exec_root),
        host=paths.docker_host,
    )
    version = _engine_version(paths.docker_host) or "unknown"
    echo(f"engine: Docker Engine {version} ready in {elapsed:.1f} s (pid {record['pid']})")
    detail = engine_detail(paths.docker_host, version, read_state(paths))
    return ServiceState("engine", True, detail, changed=True)
