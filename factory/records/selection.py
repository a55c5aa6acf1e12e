"""Which record store this environment uses, for code outside Dagster (the CLI)."""

from factory.records.index import open_index
from factory.records.s3_store import s3_store_from_env
from factory.records.store import LocalRecordStore, RecordStore
from factory.settings import Settings


def open_record_store(settings: Settings) -> RecordStore:
    """S3 when FACTORY_S3_BUCKET is set (as the code location does), else the local folders; with
    its records index attached (`store.index`), which readers use instead of listing the store."""
    store = s3_store_from_env() or LocalRecordStore(settings.data_dir)
    open_index(store, settings.data_dir)
    return store
