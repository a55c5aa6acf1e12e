"""Which record store this environment uses, for code outside Dagster (the CLI)."""

from factory.record_store import LocalRecordStore, RecordStore
from factory.s3_record_store import s3_store_from_env
from factory.settings import Settings


def open_record_store(settings: Settings) -> RecordStore:
    """S3 when FACTORY_S3_BUCKET is set (as the code location does), else the local folders."""
    return s3_store_from_env() or LocalRecordStore(settings.data_dir)
