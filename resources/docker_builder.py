"""The Docker builder resource: which engine builds and tests, and whether it has a GPU runtime."""

import dagster as dg

from factory.build.engine import Engine
from factory.services import embedded as services
from factory.settings import Settings


class DockerBuilder(dg.ConfigurableResource):
    """A Docker Engine with BuildKit; empty `docker_host` means: find the local one."""

    docker_host: str = ""

    def resolved_host(self) -> str:
        return self.docker_host or services.docker_host(Settings.from_env())

    def engine(self) -> Engine:
        return Engine(self.resolved_host())

    def gpu_available(self) -> bool:
        return services.gpu_runtime_available(self.resolved_host())
