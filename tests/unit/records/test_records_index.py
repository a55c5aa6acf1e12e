"""The records index on SQLite under the data dir (the embedded default)."""

from tests.records_index_contract import RecordsIndexContract


class TestSqliteRecordsIndex(RecordsIndexContract):
    def index_url(self, tmp_path) -> str:
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
