"""The local folder store against the record store contract (tests/record_store_contract.py)."""

import os

import pytest

from factory.records.store import LocalRecordStore
from tests.record_store_contract import RecordStoreContract


class TestLocalRecordStore(RecordStoreContract):
    @pytest.fixture
    def store(self, tmp_path) -> LocalRecordStore:
        return LocalRecordStore(tmp_path / "data")

    def uri_prefix(self, store: LocalRecordStore) -> str:
        return store.root.resolve().as_uri() + "/"

    def names_in(self, store: LocalRecordStore, folder: str) -> list[str]:
        directory = store.root / folder
        return sorted(os.listdir(directory)) if directory.is_dir() else []
