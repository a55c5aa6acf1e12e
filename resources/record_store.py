"""The record store resources: records, errors and evidence, written once per build_id.

`RecordStore` keeps them in a local data dir (the embedded default); `S3RecordStoreResource`
keeps them in an S3 bucket (production). Both open a `factory.records.store.RecordStore` with the
same interface and key layout, and both have the local `work_dir` test scripts are staged in, so
the assets take either under the `record_store` key. `record_store_selection` picks one from the
environment. Either comes with its records index attached (factory/records/index.py).
"""

from pathlib import Path

import dagster as dg

from factory.records import store as record_store
from factory.records.index import open_index
from factory.records.s3_store import S3RecordStore


class RecordStore(dg.ConfigurableResource):
    """Records and evidence under a local data dir (`.factory/records`, `.factory/evidence`)."""

    data_dir: str

    def open(self) -> record_store.RecordStore:
        store = record_store.LocalRecordStore(Path(self.data_dir))
        open_index(store, Path(self.data_dir))
        return store

    @property
    def work_dir(self) -> Path:
        """Scratch space for staged test scripts (bind-mounted into test containers)."""
        return Path(self.data_dir) / "work"


class S3RecordStoreResource(dg.ConfigurableResource):
    """Records and evidence in an S3 bucket under a prefix, written once per key."""

    bucket: str
    prefix: str = ""
    # Only for S3-compatible stores (MinIO, Ceph, moto); empty means AWS itself.
    endpoint_url: str | None = None
    region_name: str | None = None
    # Unset: boto3's own chain (environment, then the pod's IAM role).
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    # Test scripts are still staged on local disk: the engine bind-mounts them by path.
    data_dir: str

    def open(self) -> record_store.RecordStore:
        # dagster-aws (and boto3) cost ~0.8 s to import: only the S3 store pays it.
        from dagster_aws.s3 import S3Resource

        client = S3Resource(
            endpoint_url=self.endpoint_url or None,
            region_name=self.region_name or None,
            aws_access_key_id=self.aws_access_key_id or None,
            aws_secret_access_key=self.aws_secret_access_key or None,
            aws_session_token=self.aws_session_token or None,
        ).get_client()
        store = S3RecordStore(client, self.bucket, self.prefix)
        open_index(store, Path(self.data_dir))
        return store

    @property
    def work_dir(self) -> Path:
        """Scratch space for staged test scripts (bind-mounted into test containers)."""
        return Path(self.data_dir) / "work"
