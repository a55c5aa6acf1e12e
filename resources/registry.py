"""The registry resource: where images and per-platform cache refs are pushed."""

import dagster as dg

from factory.registry.client import RegistryClient


class Registry(dg.ConfigurableResource):
    """An OCI registry (distribution v2), e.g. `127.0.0.1:5000`."""

    address: str

    def client(self) -> RegistryClient:
        return RegistryClient(self.address)
