"""One partition end to end with the record store in S3 (moto's server mode) instead of `.factory`.

The resource comes from `record_store_from_env()` with the production variable names
(FACTORY_S3_*, AWS_*), so the wiring operators use is the one under test: the record, the evidence
log, the SBOM and the provenance must land in the bucket under the prefix, with s3:// URIs in the
record, and nothing in the local data dir but the staged test scripts.
"""

import dataclasses
import hashlib
import json

import pytest

from factory.platforms import BY_NAME
from factory.records.index import open_index
from factory.records.model import CompatibilityRecord
from factory.records.s3_store import S3RecordStore
from factory.supply_chain.sbom import validate_sbom
from factory.supply_chain.verify import verify_build
from resources.record_store import S3RecordStoreResource
from resources.record_store_selection import record_store_from_env
from tests.integration.chain_run import materialize_chain
from tests.integration.stores import example_store_copy, manifest

pytestmark = pytest.mark.integration
AMD64 = BY_NAME["linux/amd64"]
PREFIX = "factory"


def materialize_with_s3(settings, store_path, data_dir, manifest_id: str):
    """Materialize one amd64 partition with the record store `record_store_from_env()` picks."""
    # The data dir is the test's own; FACTORY_DATA_DIR stays as it is, since the project's engine
    # socket is found under it.
    resource = record_store_from_env(dataclasses.replace(settings, data_dir=data_dir))
    assert isinstance(resource, S3RecordStoreResource)
    return materialize_chain(
        store_path, manifest_id, registry=settings.registry, record_store=resource
    )


def test_record_and_evidence_land_in_the_bucket(services, s3, tmp_path, monkeypatch):
    bucket = s3.new_bucket()
    data_dir = tmp_path / "data"
    for name, value in {
        **s3.record_store_env(bucket, PREFIX),
        # The records index is the operator's database (PostgreSQL in production), not the pod's
        # disk.
        "FACTORY_RECORDS_INDEX_URL": f"sqlite:///{tmp_path / 'records-index.sqlite'}",
    }.items():
        monkeypatch.setenv(name, value)
    store = example_store_copy(tmp_path, {"s3_e2e": manifest()})

    result = materialize_with_s3(services, store, data_dir, "s3_e2e")
    assert result.success

    records = S3RecordStore(s3.client(), bucket, PREFIX)
    [build_id] = records.list_ids("record")
    record = CompatibilityRecord.model_validate_json(records.get("record", build_id) or b"")
    assert (record.status, record.manifest_id, record.platform) == ("pass", "s3_e2e", AMD64.name)
    assert records.uri("record", build_id) == f"s3://{bucket}/{PREFIX}/records/{build_id}.json"

    # Each piece of evidence is an object in the bucket, named in the record by its s3:// URI and
    # matching the recorded sha256.
    for name, kind in (("log", "evidence"), ("sbom", "sbom"), ("provenance", "provenance")):
        ref = record.evidence[name]
        assert ref is not None and ref.uri == records.uri(kind, build_id), name
        assert ref.uri.startswith(f"s3://{bucket}/{PREFIX}/")
        data = records.get(kind, build_id)
        assert data is not None and hashlib.sha256(data).hexdigest() == ref.sha256, name
    bom = json.loads(records.get("sbom", build_id) or b"")
    validate_sbom(bom)
    assert bom["metadata"]["component"]["version"] == record.image.digest
    assert "smoke ok: s3_e2e on" in (records.get("evidence", build_id) or b"").decode()
    assert verify_build(build_id, records).ok

    # The materialization links the bucket; the local data dir holds staged scripts only.
    [materialization] = [
        m
        for m in result.asset_materializations_for_node(f"{AMD64.slug}__chain")
        if m.asset_key.path[-1] == "compatibility_record"
    ]
    assert materialization.metadata["record"].value == records.uri("record", build_id)
    assert sorted(p.name for p in data_dir.iterdir()) == ["work"]
    # The index row names the record in the bucket.
    open_index(records, data_dir)
    assert records.index.record_of_run(result.run_id) == record
    assert records.index.check().ok
