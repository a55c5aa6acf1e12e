"""`verify_build`: a record rechecked against its stored evidence, SBOM, provenance and registry.

Every test writes a complete build by hand into a LocalRecordStore in tmp_path (log, SBOM,
provenance, record), then changes one thing and checks that exactly that is reported.
"""

import os
from pathlib import Path

import pytest

from factory.errors import ServiceError
from factory.platforms import platform as lookup_platform
from factory.records.model import CompatibilityRecord, ImageInfo, new_build_id
from factory.records.store import LocalRecordStore
from factory.store.keys import image_ref
from factory.supply_chain.provenance import build_provenance
from factory.supply_chain.sbom import SbomSubject, build_sbom
from factory.supply_chain.verify import UnknownBuildError, verify_build
from tests.unit.supply_chain.test_provenance import record_inputs

BUILD_KEY = "b" * 64
RECORD_KEY = "d" * 64
DIGEST = "sha256:" + "c" * 64
OTHER_DIGEST = "sha256:" + "9" * 64
REF = image_ref("127.0.0.1:5000", "llm_factory", lookup_platform("linux/arm64"), BUILD_KEY)
RUN_ID = "7c0f6a4e-1111-2222-3333-444455556666"


class FakeRegistry:
    """Answers HEAD with a fixed digest (None: the tag is gone) and remembers what was asked."""

    def __init__(self, served: str | None = DIGEST, error: Exception | None = None):
        self.served = served
        self.error = error
        self.asked: list[tuple[str, str, str]] = []

    def __call__(self, address: str) -> "FakeRegistry":
        self.address = address
        return self

    def head_digest(self, repository: str, reference: str) -> str | None:
        self.asked.append((self.address, repository, reference))
        if self.error is not None:
            raise self.error
        return self.served


def write_build(
    store: LocalRecordStore,
    *,
    record_digest: str = DIGEST,
    sbom_digest: str = DIGEST,
    provenance_digest: str = DIGEST,
    provenance: bool = True,
    status: str = "pass",
    ref: str = REF,
    manifest_id: str = "llm_factory",
    platform: str = "linux/arm64",
    build_key: str = BUILD_KEY,
    **record_overrides,
) -> str:
    """Write a log, an SBOM, a provenance and the record referencing them; return the build_id.

    Also used by the registry test (tests/integration/registry/test_verify_registry.py), for an
    image it pushed.
    """
    build_id = new_build_id()
    log_uri, log_sha = store.put("evidence", build_id, b"factory build\n===== build =====\nok\n")
    subject = SbomSubject(
        image_ref=ref,
        image_digest=sbom_digest,
        platform=platform,
        manifest_id=manifest_id,
        build_id=build_id,
    )
    bom = build_sbom([], subject)
    sbom_uri, sbom_sha = store.put_json("sbom", build_id, bom)
    evidence = {
        "log": {"uri": log_uri, "sha256": log_sha},
        "sbom": {"uri": sbom_uri, "sha256": sbom_sha},
        "provenance": None,
    }
    times = {
        "started_at": "2026-11-26T10:00:00.000000Z",
        "finished_at": "2026-11-26T10:01:00.000000Z",
    }
    if provenance:
        doc = build_provenance(
            build_id=build_id,
            image_ref=ref,
            image_digest=provenance_digest,
            platform=platform,
            inputs=record_inputs(),
            build_key=build_key,
            record_key=RECORD_KEY,
            dagster_run_id=RUN_ID,
            builder_id="urn:factory:builder:test",
            **times,
        )
        uri, sha = store.put_json("provenance", build_id, doc)
        evidence["provenance"] = {"uri": uri, "sha256": sha}
    fields = {
        "build_id": build_id,
        "manifest_id": manifest_id,
        "platform": platform,
        "pool": lookup_platform(platform).pool,
        "status": status,
        "build_key": build_key,
        "record_key": RECORD_KEY,
        "inputs": record_inputs(),
        "image": ImageInfo(ref=ref, digest=record_digest, size_bytes=1, layers=1),
        "evidence": evidence,
        "dagster": {"run_id": RUN_ID, "partition": manifest_id},
        **times,
    }
    fields.update(record_overrides)
    store.write_record(CompatibilityRecord(**fields))
    return build_id


def tamper(path: Path, change=lambda data: data + b" ") -> None:
    """Rewrite a write-once (read-only) file, as someone with access to the store could."""
    os.chmod(path, 0o644)
    path.write_bytes(change(path.read_bytes()))


def by_name(report) -> dict:
    return {check.name: check for check in report.checks}


def failed(report) -> set[str]:
    return {check.name for check in report.failed}


@pytest.fixture
def store(tmp_path) -> LocalRecordStore:
    return LocalRecordStore(tmp_path)


def test_an_untouched_build_verifies(store):
    build_id = write_build(store)
    registry = FakeRegistry()
    report = verify_build(build_id, store, registry_client=registry)
    assert report.ok, report.lines()
    assert set(by_name(report)) == {
        "record",
        "log sha256",
        "sbom sha256",
        "provenance sha256",
        "image ref",
        "sbom subject",
        "provenance format",
        "provenance subject",
        "provenance inputs",
        "registry",
    }
    assert not any(check.skipped for check in report.checks)
    assert registry.asked == [("127.0.0.1:5000", "factory/llm_factory", REF.rsplit(":", 1)[1])]
    assert report.lines()[-1] == f"build {build_id}: verified"
    assert report.as_dict()["ok"] is True


def test_registry_check_off_asks_no_registry_and_says_so(store):
    build_id = write_build(store)
    registry = FakeRegistry(served=OTHER_DIGEST)
    report = verify_build(build_id, store, registry_check=False, registry_client=registry)
    assert report.ok
    assert registry.asked == []
    assert by_name(report)["registry"].skipped


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("evidence", "log sha256"),
        ("sbom", "sbom sha256"),
        ("provenance", "provenance sha256"),
    ],
)
def test_a_changed_file_is_caught(store, kind, check):
    build_id = write_build(store)
    tamper(store.path(kind, build_id))
    report = verify_build(build_id, store, registry_check=False)
    assert not report.ok
    assert failed(report) == {check}
    assert "changed after the record was written" in by_name(report)[check].detail


def test_a_forged_sbom_subject_is_caught_even_without_the_hash(store):
    """Editing the digest inside the SBOM fails its sha256 and the subject is not trusted."""
    build_id = write_build(store)
    tamper(store.path("sbom", build_id), lambda d: d.replace(b"c" * 64, b"9" * 64))
    report = verify_build(build_id, store, registry_check=False)
    assert failed(report) == {"sbom sha256"}
    assert by_name(report)["sbom subject"].skipped


@pytest.mark.parametrize("kind", ["evidence", "sbom", "provenance"])
def test_a_missing_file_is_caught(store, kind):
    build_id = write_build(store)
    store.path(kind, build_id).unlink()
    report = verify_build(build_id, store, registry_check=False)
    assert not report.ok
    assert "is missing" in report.failed[0].detail


def test_an_sbom_of_another_image_is_caught(store):
    build_id = write_build(store, sbom_digest=OTHER_DIGEST)
    report = verify_build(build_id, store, registry_check=False)
    assert failed(report) == {"sbom subject"}
    assert OTHER_DIGEST in by_name(report)["sbom subject"].detail


def test_a_provenance_of_another_image_is_caught(store):
    build_id = write_build(store, provenance_digest=OTHER_DIGEST)
    report = verify_build(build_id, store, registry_check=False)
    assert failed(report) == {"provenance subject"}


def test_a_record_whose_image_digest_differs_from_its_evidence_is_caught(store):
    build_id = write_build(store, record_digest=OTHER_DIGEST)
    report = verify_build(build_id, store, registry_client=FakeRegistry(served=OTHER_DIGEST))
    assert failed(report) == {"sbom subject", "provenance subject"}


def test_provenance_of_another_build_with_the_same_image_is_caught(store):
    """A copied provenance (same image bytes, other build) has the right subject, wrong inputs."""
    build_id = write_build(store, record_key="e" * 64, dagster={"run_id": "other-run"})
    report = verify_build(build_id, store, registry_check=False)
    assert failed(report) == {"provenance inputs"}
    detail = by_name(report)["provenance inputs"].detail
    assert "record_key" in detail
    assert "invocationId" in detail


def test_registry_serving_another_digest_is_caught(store):
    build_id = write_build(store)
    report = verify_build(build_id, store, registry_client=FakeRegistry(served=OTHER_DIGEST))
    assert failed(report) == {"registry"}
    assert "pushed over" in by_name(report)["registry"].detail


def test_a_deleted_tag_and_an_unreachable_registry_are_failures_not_exceptions(store):
    build_id = write_build(store)
    gone = verify_build(build_id, store, registry_client=FakeRegistry(served=None))
    assert "no longer exists" in by_name(gone)["registry"].detail
    down = verify_build(
        build_id, store, registry_client=FakeRegistry(error=ServiceError("registry down"))
    )
    assert failed(down) == {"registry"}
    assert "registry down" in by_name(down)["registry"].detail


def test_an_image_ref_that_does_not_match_the_keys_is_caught(store):
    wrong = REF.replace("linux_arm64", "linux_amd64")
    build_id = write_build(store, image=ImageInfo(ref=wrong, digest=DIGEST))
    report = verify_build(build_id, store, registry_check=False)
    assert "image ref" in failed(report)


def test_an_old_record_without_provenance_verifies_with_a_skip(store):
    build_id = write_build(store, provenance=False)
    report = verify_build(build_id, store, registry_check=False)
    assert report.ok
    assert by_name(report)["provenance sha256"].skipped


def test_a_provenance_file_the_record_does_not_reference_is_caught(store):
    build_id = write_build(store, provenance=False)
    store.put_json("provenance", build_id, {"_type": "planted"})
    report = verify_build(build_id, store, registry_check=False)
    assert failed(report) == {"provenance sha256"}


def write_log_only(store: LocalRecordStore, log: bytes, *, status: str, image, **evidence) -> str:
    """A record whose evidence is a log (and the given `evidence` entries); its build_id."""
    build_id = new_build_id()
    uri, sha = store.put("evidence", build_id, log)
    store.write_record(
        CompatibilityRecord(
            build_id=build_id,
            manifest_id="llm_factory",
            platform="linux/arm64",
            pool="arm64",
            status=status,
            build_key=BUILD_KEY,
            record_key=RECORD_KEY,
            inputs=record_inputs(),
            image=image,
            evidence={"log": {"uri": uri, "sha256": sha}, **evidence},
            started_at="2026-11-26T10:00:00Z",
            finished_at="2026-11-26T10:00:01Z",
        )
    )
    return build_id


def test_an_error_record_without_image_or_sbom_verifies_its_log(store):
    build_id = write_log_only(
        store, b"render failed\n", status="error", image=None, sbom=None, provenance=None
    )
    report = verify_build(build_id, store, registry_client=FakeRegistry())
    assert report.ok
    assert {c.name for c in report.checks if c.skipped} >= {"registry", "sbom subject", "image ref"}


def test_a_passing_record_without_sbom_is_caught(store):
    build_id = write_log_only(
        store, b"log\n", status="pass", image=ImageInfo(ref=REF, digest=DIGEST)
    )
    report = verify_build(build_id, store, registry_check=False)
    assert failed(report) == {"sbom sha256"}


def test_an_unknown_build_id_raises_a_clear_error(store):
    write_build(store)
    with pytest.raises(UnknownBuildError, match=r"no record for build 1234.*factory records"):
        verify_build("1234", store)
    with pytest.raises(UnknownBuildError, match="is not a build id"):
        verify_build("../records/x", store)


def test_an_unreadable_record_is_a_failed_check(store):
    build_id = write_build(store)
    tamper(store.path("record", build_id), lambda data: data[: len(data) // 2])
    report = verify_build(build_id, store, registry_check=False)
    assert not report.ok
    assert [c.name for c in report.checks] == ["record"]
    assert "is not a valid record" in report.checks[0].detail
