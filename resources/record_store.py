"""The record store resource: records, errors and evidence, written once per build_id."""

from pathlib import Path

import dagster as dg

from factory import record_store


class RecordStore(dg.ConfigurableResource):
    """Records and evidence under a local data dir (`.factory/records`, `.factory/evidence`)."""

    data_dir: str

    def open(self) -> record_store.RecordStore:
        return record_store.LocalRecordStore(Path(self.data_dir))

    @property
    def work_dir(self) -> Path:
        """Scratch space for staged test scripts (bind-mounted into test containers)."""
        return Path(self.data_dir) / "work"
