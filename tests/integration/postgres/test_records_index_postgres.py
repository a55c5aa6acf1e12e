"""The records index on a real PostgreSQL server, as production runs it (the Dagster database)."""

import itertools

import pytest

from factory.records.index import open_index
from factory.records.index_schema import URL_ENV, default_url
from factory.records.store import LocalRecordStore
from tests.records_index_contract import RecordsIndexContract, record_at

pytestmark = pytest.mark.integration

_numbers = itertools.count()


class TestPostgresRecordsIndex(RecordsIndexContract):
    @pytest.fixture(autouse=True)
    def _server(self, postgres):
        self.server = postgres

    def index_url(self, tmp_path) -> str:
        return self.server.create_database(f"records_index_{next(_numbers)}")


def test_dagster_postgres_settings_host_the_index(postgres, tmp_path, monkeypatch):
    """With DAGSTER_PG_* set (deploy/dagster.yaml) and no FACTORY_RECORDS_INDEX_URL, records are
    indexed in the Dagster database itself."""
    monkeypatch.delenv(URL_ENV, raising=False)
    for name, value in postgres.dagster_env().items():
        monkeypatch.setenv(name, value)
    assert default_url(tmp_path).startswith("postgresql+psycopg2://")
    store = LocalRecordStore(tmp_path / "data")
    index = open_index(store, tmp_path / "data")
    index.ensure_current(echo=lambda _: None)
    record = record_at(0, manifest="pg_hosted")
    store.write_record(record)
    conn = postgres.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT status, record_uri FROM factory_records WHERE build_id = %s",
                (record.build_id,),
            )
            assert cursor.fetchone() == ("pass", store.uri("record", record.build_id))
    finally:
        conn.close()


def test_a_url_without_password_takes_the_dagster_password(postgres, tmp_path, monkeypatch):
    """As deploy/k8s/factory-settings.yaml sets it: the URL in a ConfigMap, the password in the
    Secret that Dagster's pods read into DAGSTER_PG_PASSWORD."""
    monkeypatch.setenv(
        URL_ENV,
        f"postgresql+psycopg2://{postgres.user}@{postgres.host}:{postgres.port}/{postgres.database}",
    )
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", postgres.password)
    store = LocalRecordStore(tmp_path / "data")
    index = open_index(store, tmp_path / "data")
    index.ensure_current(echo=lambda _: None)
    assert postgres.password not in index.shown_url
    store.write_record(record_at(1, manifest="configmap_url"))
    assert index.latest()[("configmap_url", "linux/amd64")].manifest_id == "configmap_url"
