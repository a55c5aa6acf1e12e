"""What the local service parts share: the state each reports and where each keeps its files.

Engine, registry, qemu and base images are separate modules; `factory.services.embedded` runs them
in
order. They all answer with a `ServiceState`, talk to the user through an `Echo`, and keep their
files under one data dir laid out by `ServicePaths`, so the layout is written down once.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Echo = Callable[[str], None]


@dataclass(frozen=True)
class ServiceState:
    """One part of the local services: whether it is usable, and what `up` did or saw.

    `changed` is True when `up` started, installed, configured or pushed something for it.
    """

    name: str
    ok: bool
    detail: str
    changed: bool = False


@dataclass(frozen=True)
class ServicePaths:
    """Where the local services keep their state under the data dir."""

    data_dir: Path

    @property
    def state_file(self) -> Path:
        return self.data_dir / "services.json"

    @property
    def lock_file(self) -> Path:
        return self.data_dir / "services.lock"

    @property
    def docker_dir(self) -> Path:
        return self.data_dir / "docker"

    @property
    def docker_socket(self) -> Path:
        return self.docker_dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.docker_socket}"

    @property
    def exec_root(self) -> Path:
        # dockerd puts containerd's sockets under its exec-root: a path under the data dir can
        # exceed the unix socket limit, so use a short one, unique per data dir.
        tag = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:10]
        return Path("/run") / f"factory-docker-{tag}"

    @property
    def registry_dir(self) -> Path:
        return self.data_dir / "registry"

    @property
    def base_dir(self) -> Path:
        return self.data_dir / "base"
