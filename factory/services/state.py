"""What the local service parts share: the state each reports and where each keeps its files.

Engine, registry, qemu and base images are separate modules; `factory.services.embedded` runs them
in order. They all answer with a `ServiceState`, talk to the user through an `Echo`, and keep their
files under one data dir laid out by `ServicePaths`, so the layout is written down once.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
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
    """Where the local services keep their state: every path is set from the data dir when made."""

    data_dir: Path
    state_file: Path = field(init=False)
    lock_file: Path = field(init=False)
    docker_dir: Path = field(init=False)
    docker_socket: Path = field(init=False)
    exec_root: Path = field(init=False)
    registry_dir: Path = field(init=False)
    base_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        # dockerd puts containerd's sockets under its exec-root: a path under the data dir can
        # exceed the unix socket limit, so use a short one, unique per data dir.
        tag = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:10]
        paths = {
            "state_file": self.data_dir / "services.json",
            "lock_file": self.data_dir / "services.lock",
            "docker_dir": self.data_dir / "docker",
            "docker_socket": self.data_dir / "docker" / "docker.sock",
            "exec_root": Path("/run") / f"factory-docker-{tag}",
            "registry_dir": self.data_dir / "registry",
            "base_dir": self.data_dir / "base",
        }
        for name, path in paths.items():
            object.__setattr__(self, name, path)  # a frozen dataclass's fields, set once here

    @property
    def docker_host(self) -> str:
        return f"unix://{self.docker_socket}"
