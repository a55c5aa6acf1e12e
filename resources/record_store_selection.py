"""Which record store the code location uses, picked by one environment variable.

`FACTORY_S3_BUCKET` set: the S3 store (production, `deploy/k8s/factory-settings.yaml`), with
`FACTORY_S3_PREFIX` and `FACTORY_S3_ENDPOINT_URL`; otherwise the local folders under
`FACTORY_DATA_DIR`. Credentials that are set reach the resource as `dg.EnvVar`s, so Dagster reads
them in each process and the UI shows the variable's name, never its value; when none is set, boto3
uses its own chain (the pod's IAM role on Kubernetes).
"""

import os

import dagster as dg

from factory.records.s3_store import BUCKET_ENV, ENDPOINT_ENV, PREFIX_ENV
from factory.settings import Settings
from resources.record_store import RecordStore, S3RecordStoreResource

# resource field -> environment variable, passed only when set (an unset EnvVar is an error).
CREDENTIAL_ENV = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
    "region_name": "AWS_REGION",
}


def record_store_from_env(
    settings: Settings | None = None,
) -> RecordStore | S3RecordStoreResource:
    """The `record_store` resource for this environment: S3 when FACTORY_S3_BUCKET is set."""
    settings = settings or Settings.from_env()
    bucket = os.environ.get(BUCKET_ENV, "").strip()
    if not bucket:
        return RecordStore(data_dir=str(settings.data_dir))
    credentials = {
        field: dg.EnvVar(name) for field, name in CREDENTIAL_ENV.items() if os.environ.get(name)
    }
    return S3RecordStoreResource(
        bucket=bucket,
        prefix=os.environ.get(PREFIX_ENV, "").strip(),
        # The ConfigMap holds "" for AWS itself: that means no endpoint, not an empty one.
        endpoint_url=os.environ.get(ENDPOINT_ENV, "").strip() or None,
        data_dir=str(settings.data_dir),
        **credentials,
    )
