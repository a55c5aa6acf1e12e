"""Where a build ran: the worker, its pool, its host and its Docker Engine, as records name them.

Every record carries this, so a matrix cell can be traced to the machine that produced it and a
multi-host deployment can be audited (which worker built what, on which engine). The engine is
named by its address and by the ID the engine reports for itself, which stays the same across
restarts. Docker 20.10 derives that ID from the host's `/etc/docker/key.json`, so engines that
share a host share it too: on one host the engine's address tells them apart, across hosts the ID
does.

The worker name comes from `FACTORY_WORKER_NAME` (`factory worker` sets it to its Celery node
name); the host from `FACTORY_HOST_NAME` when set (on Kubernetes, the node name through the
downward API, since a pod's hostname is the pod's name), else the machine's hostname. The executor
kind is the one `FACTORY_EXECUTOR` names.
"""

import os
import socket
from dataclasses import asdict, dataclass

WORKER_ENV = "FACTORY_WORKER_NAME"
HOST_ENV = "FACTORY_HOST_NAME"
EXECUTOR_ENV = "FACTORY_EXECUTOR"
DEFAULT_EXECUTOR = "multiprocess"


@dataclass(frozen=True)
class ExecutorIdentity:
    """The process that ran a combination's step."""

    kind: str
    worker: str
    pool: str
    host: str
    docker_host: str
    engine_id: str | None

    def as_record(self) -> dict:
        """The record's `executor` section: every field, by its name."""
        return asdict(self)

    def describe(self) -> str:
        engine = f"{self.docker_host} (engine {self.engine_id or 'unknown'})"
        return f"{self.kind} worker {self.worker} of pool {self.pool} on {self.host}, {engine}"


def host_name(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (env.get(HOST_ENV) or "").strip() or socket.gethostname()


def executor_kind(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (env.get(EXECUTOR_ENV) or "").strip().lower() or DEFAULT_EXECUTOR


def current_identity(
    *, pool: str, docker_host: str, engine_id: str | None, environ: dict[str, str] | None = None
) -> ExecutorIdentity:
    """This process as an executor of `pool`, building on the engine at `docker_host`."""
    env = os.environ if environ is None else environ
    host = host_name(env)
    worker = (env.get(WORKER_ENV) or "").strip() or f"{executor_kind(env)}@{host}:{os.getpid()}"
    return ExecutorIdentity(
        kind=executor_kind(env),
        worker=worker,
        pool=pool,
        host=host,
        docker_host=docker_host,
        engine_id=engine_id,
    )
