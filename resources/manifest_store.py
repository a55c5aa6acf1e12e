"""The manifest store resource: where the store file is, loaded and validated on use."""

from pathlib import Path

import dagster as dg

from factory.store.load import LoadedStore, load_store


class ManifestStore(dg.ConfigurableResource):
    """The manifest store (`schema_version: 1`) that names every manifest x platform."""

    path: str

    def load(self) -> LoadedStore:
        """Read and validate the store; raises StoreError listing every problem."""
        return load_store(Path(self.path))
