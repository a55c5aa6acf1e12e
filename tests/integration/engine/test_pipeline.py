"""One partition end to end on the real Docker Engine, registry and a real Dagster instance."""

import hashlib
import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

from factory.platforms import BY_NAME
from factory.records.store import LocalRecordStore
from factory.registry.client import RegistryClient
from factory.registry.names import split_image
from factory.supply_chain.sbom import validate_sbom
from factory.supply_chain.verify import verify_build
from tests.integration.chain_run import materialize_chain
from tests.integration.stores import example_store_copy, manifest, store_with_suite

pytestmark = pytest.mark.integration


def materialize(settings, store_path: Path, data_dir: Path, manifest_id: str, platform: str):
    """Materialize one partition of one platform's chain; return (result, records)."""
    result = materialize_chain(
        store_path,
        manifest_id,
        registry=settings.registry,
        record_store=data_dir,
        platform=BY_NAME[platform],
    )
    return result, list(LocalRecordStore(data_dir).records())


def path_of(uri: str) -> Path:
    return Path(urlparse(uri).path)


def failure_message(result) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures, "expected a failed step"
    return failures[0].step_failure_data.user_failure_data.description


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_combination_passes_end_to_end(services, tmp_path, platform):
    store = example_store_copy(tmp_path, {"e2e": manifest(platforms=[platform])})
    result, records = materialize(services, store, tmp_path / "data", "e2e", platform)
    assert result.success
    [record] = records
    assert (record.status, record.platform, record.error) == ("pass", platform, None)

    # The image is in the registry under the recorded digest.
    address, rest = split_image(record.image.ref.rsplit(":", 1)[0])
    assert RegistryClient(address).head_digest(rest, record.image.ref.rsplit(":", 1)[1]) == (
        record.image.digest
    )
    assert record.image.layers >= 2 and record.image.size_bytes > 0

    # The SBOM is CycloneDX, lists busybox, and has the image digest as its subject.
    sbom_path = path_of(record.evidence["sbom"].uri)
    bom = json.loads(sbom_path.read_text())
    validate_sbom(bom)
    assert bom["metadata"]["component"]["version"] == record.image.digest
    assert any(c["name"] == "busybox" for c in bom["components"])

    # Evidence hashes match the files, and the whole record verifies (provenance included).
    assert verify_build(record.build_id, LocalRecordStore(tmp_path / "data")).ok
    for ref in (record.evidence["log"], record.evidence["sbom"], record.evidence["provenance"]):
        assert hashlib.sha256(path_of(ref.uri).read_bytes()).hexdigest() == ref.sha256
    log = path_of(record.evidence["log"].uri).read_text()
    assert "smoke ok: e2e on" in log and "===== build =====" in log

    # The materialization carries the figures a user plots.
    slug = BY_NAME[platform].slug
    # One step materialized all five assets of the chain.
    mats = {
        m.asset_key.path[-1]: m for m in result.asset_materializations_for_node(f"{slug}__chain")
    }
    assert list(mats) == ["dockerfile", "image", "test_report", "sbom", "compatibility_record"]
    mat = mats["compatibility_record"]
    # The record names the executor: this process, on the project's engine.
    assert record.executor is not None
    assert record.executor.pool == BY_NAME[platform].pool
    assert record.executor.engine_id and record.executor.docker_host.startswith("unix://")
    assert f"executor {record.executor.kind} worker {record.executor.worker}" in log
    for key in (
        "status",
        "image_digest",
        "build_s",
        "test_s",
        "steps",
        "cached_steps",
        "size_bytes",
        "layers",
        "record",
    ):
        assert key in mat.metadata, key


def test_failing_suite_gives_fail_with_its_output_in_the_error_file(services, tmp_path):
    script = "#!/bin/sh\necho 'checking widgets'\necho 'widget 7 is bent' >&2\nexit 3\n"
    store = store_with_suite(tmp_path, "failing", "broken", script, timeout_s=30, after_smoke=True)
    result, records = materialize(services, store, tmp_path / "data", "failing", "linux/amd64")
    assert not result.success
    [record] = records
    assert record.status == "fail" and record.error.stage == "test"
    assert [(t.suite, t.status, t.exit_code) for t in record.tests] == [
        ("smoke", "pass", 0),
        ("broken", "fail", 3),
    ]
    error = json.loads((tmp_path / "data" / "errors" / f"error-{record.build_id}.json").read_text())
    assert error["stage"] == "test" and "widget 7 is bent" in error["log_tail"]
    message = failure_message(result)
    assert "failing" in message and "linux/amd64" in message and "stage test" in message
    # The stages before the failure are materialized; the failing one and those after are not.
    materialized = [
        m.asset_key.path[-1] for m in result.asset_materializations_for_node("linux_amd64__chain")
    ]
    assert materialized == ["dockerfile", "image"]


def test_broken_fragment_gives_error_at_stage_build(services, tmp_path):
    store = example_store_copy(
        tmp_path,
        {"broken": manifest(fragments={"security": "0.1.0", "bad": "0.1.0"})},
        modules={"bad": {"0.1.0": {"path": "modules/bad/0.1.0.Dockerfile"}}},
        files={"modules/bad/0.1.0.Dockerfile": "RUN echo 'about to fail' && exit 7\n"},
    )
    result, records = materialize(services, store, tmp_path / "data", "broken", "linux/amd64")
    assert not result.success
    [record] = records
    assert record.status == "error" and record.error.stage == "build"
    assert record.image.digest is None and record.tests == []
    assert "about to fail" in record.error.log_tail
    assert (tmp_path / "data" / "errors" / f"error-{record.build_id}.json").exists()
    assert "stage build" in failure_message(result)


def test_timed_out_suite_gives_fail(services, tmp_path):
    script = "#!/bin/sh\necho started\nsleep 60\n"
    store = store_with_suite(tmp_path, "slow", "sleepy", script, timeout_s=2)
    result, records = materialize(services, store, tmp_path / "data", "slow", "linux/amd64")
    assert not result.success
    [record] = records
    assert record.status == "fail"
    [suite] = record.tests
    assert suite.timed_out and suite.status == "fail" and suite.duration_s < 30


def test_records_are_never_overwritten(services, tmp_path):
    store = example_store_copy(tmp_path, {"twice": manifest()})
    data = tmp_path / "data"
    _, first = materialize(services, store, data, "twice", "linux/amd64")
    before = {p.name: p.read_bytes() for p in (data / "records").iterdir()}
    _, both = materialize(services, store, data, "twice", "linux/amd64")
    assert len(both) == 2 and len({r.build_id for r in both}) == 2
    for name, content in before.items():
        assert (data / "records" / name).read_bytes() == content
    # The second run reused the image built by the first: same build key, same digest.
    second = next(r for r in both if r.build_id != first[0].build_id)
    assert second.image.digest == first[0].image.digest and not second.image.rebuilt
