"""The record store in an S3 bucket: the same interface and key layout as the local folders.

Keys are `<prefix>/<folder>/<name>` with folder and name from `LAYOUT`, so a bucket and a `.factory`
folder hold the same tree and the same tools read both. S3 has no rename or hard link, so
write-once is the bucket's job: every PUT carries `If-None-Match: *`, which S3 (and MinIO, Ceph
RGW, moto) evaluate against the key at commit time. Of concurrent writers of one key exactly one
gets 200 and the others 412, and a PUT is all or nothing: a reader never sees half an object and a
second write never replaces the first.

Two corners of conditional writes are handled here rather than left to the caller:

- botocore retries a PUT whose response was lost. If the first try had committed, the retry is
  answered 412 although the object is ours. Each `put` tags its object with a random writer token
  (user metadata), and a 412 whose object carries our token is our own write, not a conflict.
- S3 answers 409 ConditionalRequestConflict while another conditional write of the key is in
  flight; AWS documents that the request should be sent again, so it is, a few times.
"""

import hashlib
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from factory.errors import FactoryError, RecordExistsError, ServiceError
from factory.records.store import LAYOUT, MAX_BYTES, RecordStore, check_id
from factory.safe_json import UnreadableEntryError

# The settings that name the bucket (deploy/k8s/factory-settings.yaml); credentials are boto3's.
BUCKET_ENV = "FACTORY_S3_BUCKET"
PREFIX_ENV = "FACTORY_S3_PREFIX"
ENDPOINT_ENV = "FACTORY_S3_ENDPOINT_URL"
# User-metadata key that names the put() call that wrote an object (x-amz-meta-factory-writer).
WRITER_KEY = "factory-writer"
# 409 ConditionalRequestConflict: another conditional write of the key is in flight.
CONFLICT_ATTEMPTS = 5
CONFLICT_BACKOFF_S = 0.2
CONTENT_TYPES = {".json": "application/json", ".log": "text/plain; charset=utf-8"}


def _error_code(exc: ClientError) -> tuple[str, int]:
    response: dict[str, Any] = exc.response
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return code, status


class S3RecordStore(RecordStore):
    """Records and evidence as objects under `s3://bucket/prefix/`, each written once."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", *, page_size: int = 1000):
        # `client` is a boto3 S3 client (dagster-aws `S3Resource(...).get_client()` in Dagster).
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.page_size = page_size  # keys per listing request; S3 caps it at 1,000

    def _folder_key(self, folder: str) -> str:
        return f"{self.prefix}/{folder}/" if self.prefix else f"{folder}/"

    def key(self, kind: str, build_id: str) -> str:
        """The object key of kind/build_id; ids that could leave their folder are refused."""
        folder, pattern = LAYOUT[kind]
        # The same rule as LocalRecordStore.path, so an id valid in one store is valid in both.
        check_id(build_id)
        return self._folder_key(folder) + pattern.format(build_id=build_id)

    def uri(self, kind: str, build_id: str) -> str:
        return f"s3://{self.bucket}/{self.key(kind, build_id)}"

    def location(self, kind: str) -> str:
        return f"s3://{self.bucket}/{self._folder_key(LAYOUT[kind][0])}"

    def _where(self) -> str:
        endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", None)
        return f"bucket {self.bucket!r}" + (f" at {endpoint}" if endpoint else "")

    @contextmanager
    def _errors(self, verb: str, key: str) -> Iterator[None]:
        """Turn boto errors into Factory's: unreachable is transient, refused is not."""
        where = f"{verb} s3://{self.bucket}/{key}"
        try:
            yield
        except ClientError as exc:
            code, status = _error_code(exc)
            msg = (
                f"{where}: S3 refused it ({code or status}: {exc}); check FACTORY_S3_BUCKET, "
                f"FACTORY_S3_PREFIX and that the credentials may read and write {self._where()}"
            )
            raise FactoryError(msg) from exc
        except BotoCoreError as exc:
            msg = (
                f"{where}: S3 did not answer ({exc}); check FACTORY_S3_ENDPOINT_URL and the "
                f"network path to {self._where()}"
            )
            raise ServiceError(msg) from exc

    def put(self, kind: str, build_id: str, data: bytes) -> tuple[str, str]:
        key = self.key(kind, build_id)
        uri = f"s3://{self.bucket}/{key}"
        token = uuid.uuid4().hex
        suffix = "." + key.rsplit(".", 1)[-1]
        with self._errors("writing", key):
            for attempt in range(1, CONFLICT_ATTEMPTS + 1):
                try:
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=data,
                        IfNoneMatch="*",
                        ContentType=CONTENT_TYPES.get(suffix, "application/octet-stream"),
                        Metadata={WRITER_KEY: token},
                    )
                    break
                except ClientError as exc:
                    code, status = _error_code(exc)
                    if status == 412 or code == "PreconditionFailed":
                        if self._written_by(key, token):
                            break  # our own write, committed before a lost response was retried
                        msg = f"{uri} already exists: {kind} entries are written once per build_id"
                        raise RecordExistsError(msg) from None
                    if (status == 409 or code == "ConditionalRequestConflict") and (
                        attempt < CONFLICT_ATTEMPTS
                    ):
                        time.sleep(CONFLICT_BACKOFF_S * attempt)
                        continue
                    raise
        return uri, hashlib.sha256(data).hexdigest()

    def _written_by(self, key: str, token: str) -> bool:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return head.get("Metadata", {}).get(WRITER_KEY) == token

    def get(self, kind: str, build_id: str) -> bytes | None:
        key = self.key(kind, build_id)
        with self._errors("reading", key):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc)[0] == "NoSuchKey":
                    return None
                raise
            # Objects are read up to the kind's cap, as local files are.
            cap = MAX_BYTES[kind]
            uri = f"s3://{self.bucket}/{key}"
            length = response.get("ContentLength")
            if isinstance(length, int) and length > cap:
                response["Body"].close()
                reason = f"is {length} bytes, more than the {cap} bytes read for it"
                raise UnreadableEntryError(uri, reason)
            data = response["Body"].read(cap + 1)
            response["Body"].close()
            if len(data) > cap:
                reason = f"is more than the {cap} bytes read for it"
                raise UnreadableEntryError(uri, reason)
            return data

    def list_ids(self, kind: str) -> list[str]:
        folder, pattern = LAYOUT[kind]
        name_prefix, name_suffix = pattern.split("{build_id}")
        start = self._folder_key(folder) + name_prefix
        ids = []
        with self._errors("listing", start):
            # One listing request returns at most page_size keys; the paginator follows the
            # continuation tokens, so a bucket with many builds is listed whole.
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start, PaginationConfig={"PageSize": self.page_size}
            )
            for page in pages:
                for entry in page.get("Contents", []):
                    rest = entry["Key"][len(start) :]
                    if rest.endswith(name_suffix) and "/" not in rest:
                        build_id = rest[: len(rest) - len(name_suffix)]
                        if build_id and not build_id.startswith("."):
                            ids.append(build_id)
        return sorted(ids)


def s3_store_from_env(environ: Mapping[str, str] = os.environ) -> S3RecordStore | None:
    """The store FACTORY_S3_BUCKET names, or None when it is unset; for code outside Dagster.

    boto3 takes the credentials and region from AWS_* or the pod's IAM role, as in the resource.
    """
    bucket = environ.get(BUCKET_ENV, "").strip()
    if not bucket:
        return None
    import boto3  # only the S3 store needs it; the local default stays quick to import

    endpoint = environ.get(ENDPOINT_ENV, "").strip() or None
    client = boto3.session.Session().client("s3", endpoint_url=endpoint)
    return S3RecordStore(client, bucket, environ.get(PREFIX_ENV, "").strip())
