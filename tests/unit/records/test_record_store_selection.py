"""`record_store_from_env`: the local folders by default, S3 when FACTORY_S3_BUCKET is set."""

from pathlib import Path

import dagster as dg
import pytest

from factory.settings import Settings
from resources.record_store import RecordStore, S3RecordStoreResource
from resources.record_store_selection import CREDENTIAL_ENV, record_store_from_env

S3_ENV = ("FACTORY_S3_BUCKET", "FACTORY_S3_PREFIX", "FACTORY_S3_ENDPOINT_URL")


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    for name in (*S3_ENV, *CREDENTIAL_ENV.values()):
        monkeypatch.delenv(name, raising=False)
    return Settings(manifest_store=tmp_path / "m.json", data_dir=tmp_path / "data", registry="r")


def test_no_bucket_means_the_local_folders(settings):
    resource = record_store_from_env(settings)
    assert type(resource) is RecordStore
    assert Path(resource.data_dir) == settings.data_dir


def test_bucket_means_s3_with_the_deploy_settings(settings, monkeypatch):
    monkeypatch.setenv("FACTORY_S3_BUCKET", "factory-evidence")
    monkeypatch.setenv("FACTORY_S3_PREFIX", "factory")
    monkeypatch.setenv("FACTORY_S3_ENDPOINT_URL", "")  # as in deploy/k8s/factory-settings.yaml
    resource = record_store_from_env(settings)
    assert isinstance(resource, S3RecordStoreResource)
    assert (resource.bucket, resource.prefix, resource.endpoint_url) == (
        "factory-evidence",
        "factory",
        None,
    )
    # No credentials in the environment: boto3's own chain (the pod's IAM role) decides.
    assert (resource.aws_access_key_id, resource.aws_secret_access_key) == (None, None)
    assert resource.work_dir == settings.data_dir / "work"


def test_credentials_reach_the_resource_as_env_vars_resolved_at_run_time(settings, monkeypatch):
    monkeypatch.setenv("FACTORY_S3_BUCKET", "factory-evidence")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    resource = record_store_from_env(settings)
    # The definition names the variables, not their values (the UI shows what is written here).
    assert resource.aws_secret_access_key == "AWS_SECRET_ACCESS_KEY"

    @dg.asset
    def seen(record_store: S3RecordStoreResource) -> tuple:
        return (
            record_store.aws_access_key_id,
            record_store.aws_secret_access_key,
            record_store.region_name,
        )

    result = dg.materialize([seen], resources={"record_store": resource})
    assert result.output_for_node("seen") == ("AKIDEXAMPLE", "not-a-real-secret", "eu-west-1")
