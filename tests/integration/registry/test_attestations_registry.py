"""Signed attestations and quarantine on the real registry, through the real chain.

A passing build with FACTORY_SIGNING_KEY set attaches a signed SBOM and provenance to its image;
they are found from the image digest alone (distribution 2.8 has no referrers API: the OCI 1.1
fallback tag) and verify with the public key. A tampered envelope, another key, and attestations
moved to another image each fail with a message saying so. A failing build's image ends up only
in `factory-quarantine/<id>`. Each test uses its own manifest id and deletes its repositories.
"""

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from factory.cli.main import main
from factory.records.gc_apply import apply_gc
from factory.records.retention import GcPlan, ManifestDeletion
from factory.registry.client import RegistryClient
from factory.registry.manifests import OCI_INDEX, OCI_MANIFEST
from factory.registry.names import split_reference
from factory.supply_chain.attestation import DSSE_MEDIA_TYPE
from factory.supply_chain.attestation_verify import verify_image
from factory.supply_chain.dsse import parse_envelope
from factory.supply_chain.referrers import Referrer, fallback_tag, list_referrers, plan_referrer_gc
from factory.supply_chain.signing_keys import generate_key_pair, load_public_key
from factory.supply_chain.verify import verify_build
from tests.integration.engine.test_pipeline import materialize
from tests.integration.stores import example_store_copy, manifest

pytestmark = pytest.mark.integration


def delete_repository(client: RegistryClient, repository: str) -> None:
    for tag in client.list_tags(repository):
        digest = client.head_digest(repository, tag)
        if digest:
            client.delete_manifest(repository, digest)


@pytest.fixture
def manifest_id(services):
    name = f"att-{uuid.uuid4().hex[:8]}"
    yield name
    client = RegistryClient(services.registry)
    for repository in (f"factory/{name}", f"factory-quarantine/{name}", f"factory/{name}-cache"):
        delete_repository(client, repository)


@pytest.fixture
def key_pair(tmp_path, monkeypatch):
    private, public, key_id = generate_key_pair(tmp_path / "signing.pem")
    monkeypatch.setenv("FACTORY_SIGNING_KEY", str(private))
    return public, key_id


def cli(tmp_path, services, *args):
    env = {
        "FACTORY_DATA_DIR": str(tmp_path / "data"),
        "FACTORY_REGISTRY": services.registry,
        "DAGSTER_HOME": str(tmp_path / "data" / "dagster"),
    }
    return CliRunner().invoke(main, list(args), env=env)


def pinned(record) -> str:
    return f"{record.image.ref.rsplit(':', 1)[0]}@{record.image.digest}"


def test_passing_build_is_attested_and_verifies_from_the_registry_alone(
    services, tmp_path, manifest_id, key_pair
):
    public, key_id = key_pair
    store = example_store_copy(tmp_path, {manifest_id: manifest()})
    result, [record] = materialize(services, store, tmp_path / "data", manifest_id, "linux/amd64")
    assert result.success and record.status == "pass"
    info = record.attestations
    assert info is not None and info.error is None, info
    assert (info.signed, info.key_id, info.scheme) == (True, key_id, "tag")
    assert sorted(i.kind for i in info.items) == ["provenance", "sbom"]

    # From the digest alone: the fallback tag lists both artifacts.
    address, repository, _ = split_reference(record.image.ref)
    client = RegistryClient(address)
    scheme, referrers = list_referrers(client, repository, record.image.digest)
    assert scheme == "tag"
    assert sorted(r.digest for r in referrers) == sorted(i.manifest_digest for i in info.items)
    assert fallback_tag(record.image.digest) in client.list_tags(repository)

    report = verify_image(pinned(record), load_public_key(public))
    assert report.ok, "\n".join(report.lines())
    assert {c.name.split()[0] for c in report.checks} >= {
        "image",
        "referrers",
        "sbom",
        "provenance",
    }

    # The command line: from the registry alone, and the record with its attestations.
    by_image = cli(tmp_path, services, "verify", "--image", pinned(record), "--key", str(public))
    assert by_image.exit_code == 0, by_image.output
    assert f"image {pinned(record)}: verified" in by_image.output
    by_record = cli(tmp_path, services, "verify", record.build_id, "--key", str(public))
    assert by_record.exit_code == 0, by_record.output
    assert "attestations" in by_record.output
    assert verify_build(record.build_id, _store(tmp_path)).ok

    # Another key: every attestation fails, and says which key signed it.
    _, other, _ = generate_key_pair(tmp_path / "other.pem", "ecdsa-p256")
    wrong = verify_image(pinned(record), load_public_key(other))
    assert not wrong.ok
    assert all("no signature verifies with key" in c.detail for c in wrong.failed[:2])
    assert key_id[:16] in wrong.failed[0].detail
    denied = cli(tmp_path, services, "verify", "--image", pinned(record), "--key", str(other))
    assert denied.exit_code == 1 and "does not verify" in denied.output

    # A tag instead of a digest is refused: the digest is what is attested.
    assert not verify_image(record.image.ref, load_public_key(public)).ok


def _store(tmp_path):
    from factory.records.store import LocalRecordStore

    return LocalRecordStore(tmp_path / "data")


def _artifact(client, repository, referrer: Referrer) -> tuple[dict, bytes]:
    _, _, body = client.get_manifest(repository, referrer.digest)
    artifact = json.loads(body)
    envelope = client.get_blob(repository, artifact["layers"][0]["digest"])
    return artifact, envelope


def _push_artifact(client, repository, artifact: dict, envelope: bytes) -> Referrer:
    """Push an artifact manifest with this envelope; the referrer entry that lists it."""
    digest = client.push_blob(repository, envelope)
    artifact = {
        **artifact,
        "layers": [{"mediaType": DSSE_MEDIA_TYPE, "digest": digest, "size": len(envelope)}],
    }
    body = json.dumps(artifact).encode()
    from factory.registry.names import sha256_digest

    manifest_digest = client.put_manifest(repository, sha256_digest(body), OCI_MANIFEST, body)
    return Referrer(
        manifest_digest, OCI_MANIFEST, len(body), DSSE_MEDIA_TYPE, artifact["annotations"]
    )


def _set_referrers(client, repository, subject: str, referrers: list[Referrer]) -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [r.as_entry() for r in referrers],
    }
    client.put_manifest(repository, fallback_tag(subject), OCI_INDEX, json.dumps(index).encode())


def test_tampered_and_moved_attestations_fail_with_a_clear_message(
    services, tmp_path, manifest_id, key_pair
):
    public, _ = key_pair
    key = load_public_key(public)
    store = example_store_copy(
        tmp_path,
        {manifest_id: manifest(), f"{manifest_id}-b": manifest()},
    )
    data = tmp_path / "data"
    try:
        _, [first] = materialize(services, store, data, manifest_id, "linux/amd64")
        _, records = materialize(services, store, data, f"{manifest_id}-b", "linux/amd64")
        second = next(r for r in records if r.manifest_id != manifest_id)
        address, repository, _ = split_reference(first.image.ref)
        _, repository_b, _ = split_reference(second.image.ref)
        client = RegistryClient(address)
        digest = first.image.digest
        _, referrers = list_referrers(client, repository, digest)
        sbom = next(
            r for r in referrers if r.annotations["in-toto.io/predicate-type"].endswith("bom")
        )
        others = [r for r in referrers if r is not sbom]

        # Tampered: one byte of the signed statement changed, the signature kept.
        artifact, envelope = _artifact(client, repository, sbom)
        parsed = parse_envelope(envelope, "test")
        doc = json.loads(envelope)
        doc["payload"] = base64.b64encode(parsed.payload.replace(b'"name"', b'"nam3"', 1)).decode()
        tampered = _push_artifact(client, repository, artifact, json.dumps(doc).encode())
        _set_referrers(client, repository, digest, [tampered, *others])
        report = verify_image(pinned(first), key)
        assert not report.ok
        [bad] = [c for c in report.failed if c.name.startswith("attestation")]
        assert tampered.digest in bad.detail and "changed after signing" in bad.detail

        # Moved as is: image A's artifact listed under image B; its subject still names A.
        _set_referrers(client, repository, digest, [sbom, *others])
        assert verify_image(pinned(first), key).ok
        for blob in (artifact["config"], artifact["layers"][0]):
            client.mount_blob(repository_b, blob["digest"], repository)
        _, _, body = client.get_manifest(repository, sbom.digest)
        client.put_manifest(repository_b, sbom.digest, OCI_MANIFEST, body)
        _, own = list_referrers(client, repository_b, second.image.digest)
        _set_referrers(client, repository_b, second.image.digest, [*own, sbom])
        moved = verify_image(pinned(second), key)
        assert not moved.ok
        [bad] = moved.failed
        assert f"is attached to {digest}, not to this image {second.image.digest}" in bad.detail

        # Moved and re-pointed: the artifact now says B, the signed statement still says A.
        head = client.head_manifest(repository_b, second.image.digest)
        repointed = {
            **artifact,
            "subject": {"mediaType": head.media_type, "digest": head.digest, "size": head.size},
        }
        moved_envelope = client.get_blob(repository, artifact["layers"][0]["digest"])
        entry = _push_artifact(client, repository_b, repointed, moved_envelope)
        _set_referrers(client, repository_b, second.image.digest, [*own, entry])
        moved = verify_image(pinned(second), key)
        assert not moved.ok
        [bad] = moved.failed
        assert f"attests {address}/{repository}@{digest}" in bad.detail
        assert "not this image" in bad.detail
    finally:
        for repo in (
            f"factory/{manifest_id}-b",
            f"factory/{manifest_id}-b-cache",
            f"factory-quarantine/{manifest_id}-b",
        ):
            delete_repository(RegistryClient(services.registry), repo)


def test_failing_build_is_quarantined_and_retested_from_quarantine(services, tmp_path, manifest_id):
    store = example_store_copy(
        tmp_path,
        {manifest_id: manifest(tests=["smoke", "broken"])},
        suites={"broken": {"path": "tests/broken.sh", "timeout_s": 30}},
        files={"tests/broken.sh": "#!/bin/sh\necho 'widget 7 is bent' >&2\nexit 3\n"},
    )
    data = tmp_path / "data"
    result, [record] = materialize(services, store, data, manifest_id, "linux/amd64")
    assert not result.success and record.status == "fail"
    tag = record.image.ref.rsplit(":", 1)[1]
    quarantined = f"{services.registry}/factory-quarantine/{manifest_id}:{tag}"
    assert record.quarantine is not None and record.quarantine.error is None
    assert record.quarantine.ref == quarantined
    client = RegistryClient(services.registry)
    assert client.list_tags(f"factory/{manifest_id}") == []
    assert client.list_tags(f"factory-quarantine/{manifest_id}") == [tag]
    assert client.head_digest(f"factory-quarantine/{manifest_id}", tag) == record.image.digest
    assert client.head_digest(f"factory/{manifest_id}", record.image.digest) is None
    # The record still verifies: its image is looked up where it lives now.
    report = verify_build(record.build_id, _store(tmp_path))
    assert report.ok, "\n".join(report.lines())
    listed = cli(tmp_path, services, "records")
    assert listed.exit_code == 0, listed.output
    assert f"quarantine {quarantined}" in listed.output

    # Again: the quarantined image is re-tested, not rebuilt, and stays in quarantine only.
    _, records = materialize(services, store, data, manifest_id, "linux/amd64")
    again = next(r for r in records if r.build_id != record.build_id)
    assert again.status == "fail" and not again.image.rebuilt
    assert again.image.digest == record.image.digest
    assert again.quarantine.ref == quarantined and again.quarantine.error is None
    assert client.list_tags(f"factory/{manifest_id}") == []
    assert client.list_tags(f"factory-quarantine/{manifest_id}") == [tag]


def test_an_unusable_key_is_the_records_error_and_the_record_is_kept(
    services, tmp_path, manifest_id, monkeypatch
):
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
    monkeypatch.setenv("FACTORY_SIGNING_KEY", str(bad))
    store = example_store_copy(tmp_path, {manifest_id: manifest()})
    result, [record] = materialize(services, store, tmp_path / "data", manifest_id, "linux/amd64")
    assert result.success and record.status == "pass"
    assert record.attestations is not None and not record.attestations.items
    assert (
        str(bad) in record.attestations.error
        and "not a PEM private key" in record.attestations.error
    )
    # Everything else was recorded; verify says the attestations are missing, and why.
    report = verify_build(record.build_id, _store(tmp_path))
    [failed] = report.failed
    assert failed.name == "attestations" and "not a PEM private key" in failed.detail
    assert {c.name for c in report.checks if c.ok} >= {
        "sbom sha256",
        "provenance sha256",
        "registry",
    }


def test_gc_of_an_attested_image_takes_its_attestations_along(
    services, tmp_path, manifest_id, key_pair
):
    store = example_store_copy(tmp_path, {manifest_id: manifest()})
    _, [record] = materialize(services, store, tmp_path / "data", manifest_id, "linux/amd64")
    address, repository, tag = split_reference(record.image.ref)
    client = RegistryClient(address)
    plan = GcPlan(keep=1, evidence_days=90, now=datetime.now(UTC))
    plan.deletions.append(
        ManifestDeletion(repository, record.image.digest, (tag,), manifest_id, ("linux/amd64",), "")
    )
    plan_referrer_gc(plan, client)
    artifacts = {i.manifest_digest for i in record.attestations.items}
    index = client.head_digest(repository, fallback_tag(record.image.digest))
    assert {d.digest for d in plan.deletions[1:]} == {index, *artifacts}
    assert all("attestations of deleted image" in line for line in plan.lines()[1:])
    apply_gc(plan, client, tmp_path / "data")
    assert client.list_tags(repository) == []
    assert list_referrers(client, repository, record.image.digest) == ("tag", [])
    assert all(client.head_digest(repository, d) is None for d in artifacts)
