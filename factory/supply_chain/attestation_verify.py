"""Checking an image's attestations from the registry alone (`factory verify --image`), and that
the attestations a record names are still attached (`factory verify`).

`verify_image` needs nothing but the registry and a public key: it lists the image's referrers
(factory/supply_chain/referrers.py), and for each attestation checks the artifact's subject, the
envelope's signature, the statement's subject (name and digest) and that the SBOM or provenance
itself names the image. Everything read is hostile input: every field is checked and a failure is
a check with a message naming what and where, never an exception.

No Dagster import.
"""

import json
from collections.abc import Callable
from typing import Any

from factory.errors import FactoryError, InvalidNameError, RegistryError
from factory.registry.client import RegistryClient
from factory.registry.manifests import IMAGE_TYPES, answer_error, checked_digest, parse_json_object
from factory.registry.names import split_reference
from factory.safe_json import printable
from factory.supply_chain.attestation import (
    DSSE_MEDIA_TYPE,
    KIND_OF_PREDICATE,
    PREDICATE_ANNOTATION,
)
from factory.supply_chain.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    MAX_ENVELOPE_BYTES,
    EnvelopeError,
    parse_envelope,
    verify_envelope,
)
from factory.supply_chain.provenance import STATEMENT_TYPE, validate_provenance
from factory.supply_chain.referrers import Referrer, fallback_tag, list_referrers
from factory.supply_chain.signing_keys import PublicKey
from factory.supply_chain.verify import VerifyReport


def _check_artifact(
    client: RegistryClient, repository: str, referrer: Referrer, image_digest: str
) -> str:
    """The envelope's digest after checking the artifact manifest; RegistryError if unusable."""
    where = f"{client.address}/{repository}@{referrer.digest}"
    media_type, _, body = client.get_manifest(repository, referrer.digest)
    if media_type not in IMAGE_TYPES:
        msg = f"{where} is a {media_type}, not an artifact manifest"
        raise RegistryError(msg)
    manifest = parse_json_object(body, where)
    subject = manifest.get("subject")
    if not isinstance(subject, dict):
        problem = "is missing: the artifact is not attached to any image"
        raise answer_error(where, "subject", problem)
    named = checked_digest(subject.get("digest"), where, "subject.digest")
    if named != image_digest:
        msg = f"{where} is attached to {named}, not to this image {image_digest}"
        raise RegistryError(msg)
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        raise answer_error(where, "layers", "must hold exactly one DSSE envelope")
    if layers[0].get("mediaType") != DSSE_MEDIA_TYPE:
        raise answer_error(where, "layers[0].mediaType", f"is not {DSSE_MEDIA_TYPE}")
    return checked_digest(layers[0].get("digest"), where, "layers[0].digest")


def _check_statement(
    payload: bytes, where: str, image_name: str, image_digest: str, annotated: str | None
) -> tuple[str, str]:
    """(kind, detail) of a verified payload about this image; ValueError naming what is not."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        msg = f"{where}: the signed payload is not JSON"
        raise ValueError(msg) from None
    if not isinstance(doc, dict) or doc.get("_type") != STATEMENT_TYPE:
        msg = f"{where}: the signed payload is not an in-toto Statement v1"
        raise ValueError(msg)
    predicate_type = doc.get("predicateType")
    kind = KIND_OF_PREDICATE.get(predicate_type) if isinstance(predicate_type, str) else None
    if kind is None:
        shown = printable(predicate_type, limit=80)
        msg = f"{where}: predicateType {shown} is not an SBOM or provenance"
        raise ValueError(msg)
    if annotated is not None and annotated != predicate_type:
        msg = (
            f"{where}: annotated as {printable(annotated, limit=80)} but signed as {predicate_type}"
        )
        raise ValueError(msg)
    subjects = doc.get("subject")
    hex_digest = image_digest.removeprefix("sha256:")
    if not isinstance(subjects, list) or not subjects:
        msg = f"{where}: the statement has no subject"
        raise ValueError(msg)
    names = []
    for subject in subjects:
        if not isinstance(subject, dict) or not isinstance(subject.get("digest"), dict):
            msg = f"{where}: a statement subject is not {{name, digest}}"
            raise ValueError(msg)
        name = printable(subject.get("name"), limit=120)
        names.append(f"{name}@sha256:{printable(subject['digest'].get('sha256'), limit=70)}")
        if subject["digest"].get("sha256") == hex_digest and subject.get("name") == image_name:
            break
    else:
        msg = (
            f"{where}: the signed statement attests {', '.join(names)}, not this image "
            f"{image_name}@{image_digest}"
        )
        raise ValueError(msg)
    predicate = doc.get("predicate")
    if kind == "provenance":
        validate_provenance(doc)
        return kind, f"SLSA provenance v1 of {image_name}@{image_digest}"
    component = (
        (predicate.get("metadata") or {}).get("component") if isinstance(predicate, dict) else None
    )
    version = component.get("version") if isinstance(component, dict) else None
    if version != image_digest:
        shown = printable(version, limit=80)
        msg = f"{where}: the SBOM describes {shown}, not this image {image_digest}"
        raise ValueError(msg)
    count = len(predicate.get("components") or []) if isinstance(predicate, dict) else 0
    return kind, f"CycloneDX SBOM of {image_digest} ({count} components)"


def verify_image(
    image: str,
    key: PublicKey,
    *,
    registry_client: Callable[[str], Any] = RegistryClient,
) -> VerifyReport:
    """Check an image's attestations from the registry alone (module docstring).

    `image` is `REGISTRY/REPOSITORY@sha256:...`. Verified when at least one SBOM and one
    provenance attestation verify and no attestation attached to the image fails.
    """
    report = VerifyReport(image, label="image")
    try:
        address, repository, digest = split_reference(image)
        if not digest.startswith("sha256:"):
            msg = f"{image} names a tag: give REF@sha256:<digest>, the digest is what is attested"
            raise ValueError(msg)
        checked_digest(digest, image, "the digest")
        client = registry_client(address)
        found = client.head_manifest(repository, digest)
    except (ValueError, InvalidNameError, FactoryError) as exc:
        report.add("image", False, str(exc))
        return report
    if found is None:
        report.add("image", False, f"{address}/{repository}@{digest} is not in the registry")
        return report
    report.add("image", True, f"{address}/{repository}@{digest} ({found.media_type})")
    image_name = f"{address}/{repository}"
    try:
        scheme, referrers = list_referrers(client, repository, digest)
    except FactoryError as exc:
        report.add("referrers", False, str(exc))
        return report
    attestations = [r for r in referrers if r.artifact_type in (None, DSSE_MEDIA_TYPE)]
    how = "referrers API" if scheme == "referrers" else f"fallback tag {fallback_tag(digest)}"
    report.add(
        "referrers",
        bool(attestations),
        f"{len(attestations)} attestation(s) via the {how}"
        if attestations
        else f"no attestation attached to this image (looked in the {how})",
    )
    verified: dict[str, int] = {"sbom": 0, "provenance": 0}
    for referrer in attestations:
        where = f"attestation {referrer.digest}"
        try:
            envelope_digest = _check_artifact(client, repository, referrer, digest)
            data = client.get_blob(repository, envelope_digest, max_bytes=MAX_ENVELOPE_BYTES)
            envelope = parse_envelope(data, where)
            payload = verify_envelope(envelope, key, where, IN_TOTO_PAYLOAD_TYPE)
            kind, detail = _check_statement(
                payload, where, image_name, digest, referrer.annotations.get(PREDICATE_ANNOTATION)
            )
        except (FactoryError, EnvelopeError, ValueError) as exc:
            report.add(f"attestation {referrer.digest[7:19]}", False, str(exc))
            continue
        verified[kind] += 1
        report.add(
            f"{kind} {referrer.digest[7:19]}", True, f"signed by {key.key_id[:16]}: {detail}"
        )
    for kind, count in verified.items():
        if not count:
            report.add(
                kind,
                False,
                f"no {kind} attestation of this image verifies with key {key.key_id[:16]}",
            )
    return report


def check_recorded(record, client: RegistryClient) -> tuple[bool, str]:
    """Whether the attestations a record names are still attached to its image, unchanged."""
    info = record.attestations
    if info is None or not info.items:
        return True, ""
    _, repository, _ = split_reference(record.image.ref)
    digest = record.image.digest
    _, referrers = list_referrers(client, repository, digest)
    listed = {r.digest: r for r in referrers}
    for item in info.items:
        referrer = listed.get(item.manifest_digest)
        if referrer is None:
            return False, f"{item.kind} attestation {item.manifest_digest} is no longer attached"
        envelope = _check_artifact(client, repository, referrer, digest)
        if envelope != item.envelope_digest:
            return False, f"{item.kind} attestation {item.manifest_digest} holds another envelope"
    return True, f"{len(info.items)} attestation(s) attached ({info.scheme})"
