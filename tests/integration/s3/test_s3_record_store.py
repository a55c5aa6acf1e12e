"""The S3 record store against a real S3 API (moto's server mode) and the shared store contract.

Besides the contract (tests/record_store_contract.py), the parts only S3 has: listings that take
several requests, prefixes that share a bucket, a PUT that botocore sends again after a lost
response, a 409 from a conditional write in flight, and errors that say what to check.
"""

import uuid

import pytest
from botocore.awsrequest import AWSResponse

from factory.errors import FactoryError, RecordExistsError, ServiceError
from factory.records.model import new_build_id
from factory.records.s3_store import WRITER_KEY, S3RecordStore, s3_store_from_env
from tests.integration.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Server
from tests.record_store_contract import RecordStoreContract
from tests.unit.records.test_records import make_record

pytestmark = pytest.mark.integration


class TestS3RecordStore(RecordStoreContract):
    @pytest.fixture
    def store(self, s3) -> S3RecordStore:
        return S3RecordStore(s3.client(), s3.new_bucket(), "factory/records-test")

    def uri_prefix(self, store: S3RecordStore) -> str:
        return f"s3://{store.bucket}/factory/records-test/"

    def names_in(self, store: S3RecordStore, folder: str) -> list[str]:
        start = f"{store.prefix}/{folder}/"
        listing = store.client.list_objects_v2(Bucket=store.bucket, Prefix=start)
        return sorted(entry["Key"][len(start) :] for entry in listing.get("Contents", []))


def count_calls(client, operation: str) -> list[str]:
    """Record every request the client sends for `operation` (botocore's before-send event)."""
    calls: list[str] = []
    client.meta.events.register(f"before-send.s3.{operation}", lambda **_: calls.append(operation))
    return calls


def test_list_ids_follows_the_continuation_tokens(s3):
    store = S3RecordStore(s3.client(), s3.new_bucket(), "p", page_size=2)
    ids = sorted(new_build_id() for _ in range(5))
    for build_id in ids:
        store.write_record(make_record(build_id=build_id))
    listings = count_calls(store.client, "ListObjectsV2")
    assert store.list_ids("record") == ids
    assert len(listings) == 3  # 2 + 2 + 1 keys


def test_prefixes_share_a_bucket_without_seeing_each_other(s3):
    client, bucket = s3.client(), s3.new_bucket()
    at_root, staging, prod = (S3RecordStore(client, bucket, p) for p in ("", "staging/", "prod"))
    record = make_record()
    for store in (at_root, staging, prod):
        store.write_record(record)  # one build_id, three trees: no conflict across prefixes
    assert at_root.uri("record", record.build_id) == f"s3://{bucket}/records/{record.build_id}.json"
    assert staging.uri("record", record.build_id).startswith(f"s3://{bucket}/staging/records/")
    assert [s.list_ids("record") for s in (at_root, staging, prod)] == [[record.build_id]] * 3


def test_strays_in_a_folder_are_not_ids(s3):
    store = S3RecordStore(s3.client(), s3.new_bucket(), "p")
    record = make_record()
    store.write_record(record)
    for stray in ("p/records/notes.txt", "p/records/old/x.json", "p/records/.tmp-1.json"):
        store.client.put_object(Bucket=store.bucket, Key=stray, Body=b"{}")
    assert store.list_ids("record") == [record.build_id]


def test_a_put_sent_again_after_a_lost_response_is_our_own_write(s3):
    """botocore re-sends a PUT whose response it did not get; the re-send meets a 412 from the
    first copy, which committed. That is our write, not a conflict: no RecordExistsError."""
    store = S3RecordStore(s3.client(), s3.new_bucket(), "p")
    puts = count_calls(store.client, "PutObject")

    def lose_first_response(attempts, **_):
        return 0 if attempts == 1 else None  # retry now, as for a dropped connection

    store.client.meta.events.register_first("needs-retry.s3.PutObject", lose_first_response)
    record = make_record()
    uri = store.write_record(record)
    assert len(puts) == 2  # the committed first send and botocore's re-send
    assert uri.endswith(f"/p/records/{record.build_id}.json")
    assert list(store.records()) == [record]
    # Another writer of the same id is still refused, however often botocore sends it.
    with pytest.raises(RecordExistsError):
        store.write_record(record.model_copy(update={"status": "fail"}))
    head = store.client.head_object(Bucket=store.bucket, Key=store.key("record", record.build_id))
    assert len(head["Metadata"][WRITER_KEY]) == 32


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_):
        yield self.data


def test_a_conditional_write_in_flight_409_is_sent_again(s3):
    """S3 answers 409 ConditionalRequestConflict while another conditional write of the key is
    in flight; AWS says to send the request again."""
    store = S3RecordStore(s3.client(), s3.new_bucket(), "p")
    puts = count_calls(store.client, "PutObject")
    conflict = (
        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ConditionalRequestConflict</Code>"
        b"<Message>A conflicting operation is in progress</Message></Error>"
    )

    def conflict_once(request, **_):
        if len(puts) == 1:
            return AWSResponse(request.url, 409, {}, _Body(conflict))
        return None

    store.client.meta.events.register("before-send.s3.PutObject", conflict_once)
    record = make_record()
    store.write_record(record)
    assert len(puts) == 2 and list(store.records()) == [record]


def test_a_missing_bucket_says_what_to_check(s3):
    store = S3RecordStore(s3.client(), f"no-such-bucket-{uuid.uuid4().hex[:8]}", "p")
    with pytest.raises(FactoryError, match="FACTORY_S3_BUCKET") as refused:
        store.put("record", new_build_id(), b"{}")
    assert "NoSuchBucket" in str(refused.value)
    with pytest.raises(FactoryError, match="NoSuchBucket"):
        store.list_ids("record")


def test_an_endpoint_that_does_not_answer_is_a_service_error(s3):
    unreachable = S3Server(endpoint_url="http://127.0.0.1:9", pid=0)
    store = S3RecordStore(
        unreachable.client(retries={"max_attempts": 1}, connect_timeout=2), "bucket", "p"
    )
    with pytest.raises(ServiceError, match="FACTORY_S3_ENDPOINT_URL"):
        store.get("record", new_build_id())


def test_s3_store_from_env(s3, monkeypatch):
    assert s3_store_from_env({}) is None
    bucket = s3.new_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    env = {
        "FACTORY_S3_BUCKET": bucket,
        "FACTORY_S3_PREFIX": "/factory/",
        "FACTORY_S3_ENDPOINT_URL": s3.endpoint_url,
    }
    store = s3_store_from_env(env)
    assert store is not None and (store.bucket, store.prefix) == (bucket, "factory")
    record = make_record()
    assert store.write_record(record) == f"s3://{bucket}/factory/records/{record.build_id}.json"
