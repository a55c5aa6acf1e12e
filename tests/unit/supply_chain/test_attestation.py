"""Attestation pure logic: fallback tags, referrers lists and signed statements, hostile or not."""

import json

import pytest

from factory.errors import RegistryError
from factory.supply_chain.attestation import SBOM_PREDICATE, statement
from factory.supply_chain.attestation_verify import _check_statement
from factory.supply_chain.provenance import build_provenance
from factory.supply_chain.referrers import fallback_tag, parse_referrers
from factory.supply_chain.sbom import SbomSubject, build_sbom
from tests.unit.supply_chain.test_provenance import record_inputs

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
REF = "127.0.0.1:5000/factory/m:linux_amd64-0123456789ab"
NAME = "127.0.0.1:5000/factory/m"


def test_fallback_tag_is_the_oci_1_1_scheme():
    assert fallback_tag(DIGEST) == "sha256-" + "ab" * 32


def _entry(**fields) -> dict:
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": DIGEST,
        "size": 10,
        "artifactType": "application/vnd.dsse.envelope.v1+json",
        "annotations": {"in-toto.io/predicate-type": SBOM_PREDICATE},
    }
    entry.update(fields)
    return entry


def test_referrers_round_trip():
    [referrer] = parse_referrers(json.dumps({"manifests": [_entry()]}).encode(), "where")
    assert referrer.as_entry() == _entry()
    assert parse_referrers(b'{"manifests": null}', "w") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"manifests": "x"}, "manifests"),
        ({"manifests": [7]}, r"manifests\[0\]"),
        ({"manifests": [_entry(digest="sha256:../x")]}, r"manifests\[0\].digest"),
        ({"manifests": [_entry(size=-1)]}, r"manifests\[0\].size"),
        ({"manifests": [_entry(mediaType=None)]}, r"manifests\[0\].mediaType"),
        ({"manifests": [_entry(artifactType=["x"])]}, r"manifests\[0\].artifactType"),
        ({"manifests": [_entry(annotations={"k": 1})]}, r"manifests\[0\].annotations"),
        ({"manifests": [_entry()] * 1025}, "1025 entries"),
    ],
)
def test_hostile_referrers_lists_name_the_field(body, field):
    with pytest.raises(RegistryError, match=field):
        parse_referrers(json.dumps(body).encode(), "registry/x:sha256-ab")


def sbom_statement(digest=DIGEST) -> bytes:
    subject = SbomSubject(
        image_ref=REF, image_digest=digest, platform="linux/amd64", manifest_id="m", build_id="b1"
    )
    bom = build_sbom([], subject)
    return json.dumps(statement("sbom", REF, DIGEST, bom)).encode()


def provenance_statement() -> bytes:
    doc = build_provenance(
        build_id="b1",
        image_ref=REF,
        image_digest=DIGEST,
        platform="linux/amd64",
        inputs=record_inputs(),
        build_key="a" * 64,
        record_key="b" * 64,
        dagster_run_id=None,
        started_at="2026-11-26T10:00:00Z",
        finished_at="2026-11-26T10:00:05Z",
        builder_id="urn:factory:builder:test",
    )
    return json.dumps(statement("provenance", REF, DIGEST, doc)).encode()


def test_statements_about_this_image_pass():
    assert _check_statement(sbom_statement(), "a", NAME, DIGEST, SBOM_PREDICATE)[0] == "sbom"
    assert _check_statement(provenance_statement(), "a", NAME, DIGEST, None)[0] == "provenance"


@pytest.mark.parametrize(
    ("payload", "image", "digest", "annotated", "problem"),
    [
        (b"not json", NAME, DIGEST, None, "not JSON"),
        (b"[]", NAME, DIGEST, None, "not an in-toto Statement"),
        (sbom_statement(), NAME, OTHER, None, "attests .*, not this image"),
        (sbom_statement(), "127.0.0.1:5000/factory/other", DIGEST, None, "not this image"),
        (sbom_statement(), NAME, DIGEST, "https://slsa.dev/provenance/v1", "annotated as"),
        (sbom_statement(digest=OTHER), NAME, DIGEST, None, "the SBOM describes"),
        (
            json.dumps({"_type": "https://in-toto.io/Statement/v1", "predicateType": "x"}).encode(),
            NAME,
            DIGEST,
            None,
            "not an SBOM or provenance",
        ),
    ],
)
def test_statements_about_something_else_fail(payload, image, digest, annotated, problem):
    with pytest.raises(ValueError, match=problem):
        _check_statement(payload, "attestation sha256:1", image, digest, annotated)
