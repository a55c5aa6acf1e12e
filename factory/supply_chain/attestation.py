"""Signed attestations attached to images in the registry, and checking them from the registry.

A passing build's SBOM and provenance become in-toto Statements (subject: the image's repository
and digest), each signed as a DSSE envelope with the key FACTORY_SIGNING_KEY names, and pushed to
the image's repository as an OCI 1.1 artifact: a manifest whose one layer is the envelope and whose
`subject` is the image manifest. Registries with the referrers API index the artifact themselves;
for the others (distribution 2.8, Debian's docker-registry) the OCI 1.1 fallback tag
`sha256-<hex of the image digest>` holds an OCI index listing the image's referrers, updated here.

`verify_image` needs nothing but the registry and a public key: it lists the image's referrers,
and for each attestation checks the artifact's subject, the envelope's signature, the statement's
subject (name and digest) and that the SBOM or provenance itself names the image. Everything read
is hostile input: every field is checked and a failure is a check with a message naming what and
where, never an exception.

No Dagster import.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from factory.errors import FactoryError, InvalidNameError, RegistryError
from factory.records.model import AttestationInfo, AttestationRef
from factory.registry.client import RegistryClient
from factory.registry.manifests import (
    IMAGE_TYPES,
    MAX_INDEX_ENTRIES,
    OCI_INDEX,
    OCI_MANIFEST,
    checked_digest,
    checked_size,
    parse_json_object,
)
from factory.registry.names import sha256_digest, split_reference
from factory.safe_json import printable
from factory.supply_chain.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    MAX_ENVELOPE_BYTES,
    EnvelopeError,
    parse_envelope,
    sign_envelope,
    verify_envelope,
)
from factory.supply_chain.provenance import PREDICATE_TYPE as PROVENANCE_PREDICATE
from factory.supply_chain.provenance import STATEMENT_TYPE, image_repository, validate_provenance
from factory.supply_chain.signing_keys import (
    KeyFileError,
    PublicKey,
    SigningKey,
    signing_key_from_env,
)
from factory.supply_chain.verify import VerifyReport

SBOM_PREDICATE = "https://cyclonedx.org/bom"
PREDICATES = {"sbom": SBOM_PREDICATE, "provenance": PROVENANCE_PREDICATE}
KIND_OF_PREDICATE = {v: k for k, v in PREDICATES.items()}
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
BUILD_ANNOTATION = "io.factory.build-id"
MAX_ANNOTATIONS = 64
# A concurrent build may rewrite the fallback tag between our read and write: re-read and retry.
FALLBACK_ATTEMPTS = 3

log = logging.getLogger(__name__)
_said_unsigned = False


class AttestationError(FactoryError):
    """An attestation could not be made or pushed."""


def fallback_tag(digest: str) -> str:
    """The OCI 1.1 referrers fallback tag of a digest: `sha256-<hex>`."""
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}-{hex_part}"


def statement(kind: str, image_ref: str, image_digest: str, predicate: dict) -> dict:
    """An in-toto Statement v1 about one image; the provenance already is one."""
    if kind == "provenance":
        return predicate
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {
                "name": image_repository(image_ref),
                "digest": {"sha256": image_digest.removeprefix("sha256:")},
            }
        ],
        "predicateType": PREDICATES[kind],
        "predicate": predicate,
    }


# --- the referrers list ------------------------------------------------------------------------


@dataclass(frozen=True)
class Referrer:
    """One entry of an image's referrers list."""

    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: dict[str, str]

    def as_entry(self) -> dict:
        entry: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type:
            entry["artifactType"] = self.artifact_type
        if self.annotations:
            entry["annotations"] = self.annotations
        return entry


def _bad(where: str, field: str, problem: str) -> RegistryError:
    return RegistryError(f"{where}: the registry's answer is unusable: {field} {problem}")


def parse_referrers(body: bytes, where: str) -> list[Referrer]:
    """The entries of a referrers index (API answer or fallback tag), every field checked."""
    index = parse_json_object(body, where)
    manifests = index.get("manifests")
    if manifests is None:
        return []
    if not isinstance(manifests, list):
        raise _bad(where, "manifests", "is not a list")
    if len(manifests) > MAX_INDEX_ENTRIES:
        raise _bad(
            where, "manifests", f"has {len(manifests)} entries (at most {MAX_INDEX_ENTRIES})"
        )
    found = []
    for n, entry in enumerate(manifests):
        field = f"manifests[{n}]"
        if not isinstance(entry, dict):
            raise _bad(where, field, "is not an object")
        media_type = entry.get("mediaType")
        if not isinstance(media_type, str) or len(media_type) > 255:
            raise _bad(where, f"{field}.mediaType", "is not a media type")
        artifact_type = entry.get("artifactType")
        if artifact_type is not None and (
            not isinstance(artifact_type, str) or len(artifact_type) > 255
        ):
            raise _bad(where, f"{field}.artifactType", "is not a media type")
        annotations = entry.get("annotations") or {}
        if (
            not isinstance(annotations, dict)
            or len(annotations) > MAX_ANNOTATIONS
            or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 255 and len(v) <= 4096
                for k, v in annotations.items()
            )
        ):
            raise _bad(where, f"{field}.annotations", "is not a small map of strings")
        found.append(
            Referrer(
                digest=checked_digest(entry.get("digest"), where, f"{field}.digest"),
                media_type=media_type,
                size=checked_size(entry.get("size"), where, f"{field}.size"),
                artifact_type=artifact_type,
                annotations=annotations,
            )
        )
    return found


def list_referrers(
    client: RegistryClient, repository: str, digest: str
) -> tuple[str, list[Referrer]]:
    """("referrers" or "tag", the image's referrers): the API where offered, else the tag."""
    body = client.get_referrers(repository, digest)
    if body is not None:
        return "referrers", parse_referrers(
            body, f"{client.address}/{repository} referrers of {digest}"
        )
    tag = fallback_tag(digest)
    if client.head_digest(repository, tag) is None:
        return "tag", []
    media_type, _, body = client.get_manifest(repository, tag)
    where = f"{client.address}/{repository}:{tag}"
    if media_type != OCI_INDEX:
        msg = f"{where} is a {media_type}, not the OCI index a referrers fallback tag must be"
        raise RegistryError(msg)
    return "tag", parse_referrers(body, where)


def _add_to_fallback_tag(
    client: RegistryClient, repository: str, subject: str, new: Referrer
) -> None:
    tag = fallback_tag(subject)
    for _ in range(FALLBACK_ATTEMPTS):
        _, current = list_referrers(client, repository, subject)
        if any(r.digest == new.digest for r in current):
            return
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [r.as_entry() for r in (*current, new)],
        }
        client.put_manifest(repository, tag, OCI_INDEX, json.dumps(index, indent=2).encode())
        _, after = list_referrers(client, repository, subject)
        if any(r.digest == new.digest for r in after):
            return
    msg = (
        f"{client.address}/{repository}:{tag} kept losing the new entry {new.digest} "
        f"({FALLBACK_ATTEMPTS} attempts): another writer is rewriting it"
    )
    raise AttestationError(msg)


# --- pushing -----------------------------------------------------------------------------------


def attach(
    client: RegistryClient,
    repository: str,
    image_digest: str,
    envelope_bytes: bytes,
    *,
    predicate_type: str,
    build_id: str,
) -> tuple[str, str, str]:
    """Push an envelope as an artifact whose subject is the image; (manifest, envelope, scheme)."""
    subject = client.head_manifest(repository, image_digest)
    if subject is None:
        msg = f"{client.address}/{repository}@{image_digest} is not in the registry: no subject"
        raise AttestationError(msg)
    config_digest = client.push_blob(repository, EMPTY_CONFIG)
    envelope_digest = client.push_blob(repository, envelope_bytes)
    annotations = {PREDICATE_ANNOTATION: predicate_type, BUILD_ANNOTATION: build_id}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": DSSE_MEDIA_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": config_digest,
            "size": len(EMPTY_CONFIG),
        },
        "layers": [
            {"mediaType": DSSE_MEDIA_TYPE, "digest": envelope_digest, "size": len(envelope_bytes)}
        ],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": subject.size,
        },
        "annotations": annotations,
    }
    body = json.dumps(manifest, indent=2).encode()
    manifest_digest = client.put_manifest(repository, sha256_digest(body), OCI_MANIFEST, body)
    if client.get_referrers(repository, image_digest) is not None:
        return manifest_digest, envelope_digest, "referrers"
    referrer = Referrer(manifest_digest, OCI_MANIFEST, len(body), DSSE_MEDIA_TYPE, annotations)
    _add_to_fallback_tag(client, repository, image_digest, referrer)
    return manifest_digest, envelope_digest, "tag"


def sign_and_attach(
    documents: dict[str, dict],
    *,
    image_ref: str,
    image_digest: str,
    build_id: str,
    key: SigningKey,
    registry_client: Callable[[str], Any] = RegistryClient,
) -> AttestationInfo:
    """Sign each document (kind -> SBOM or provenance) and attach it to the image."""
    address, repository, _ = split_reference(image_ref)
    client = registry_client(address)
    items, scheme = [], None
    for kind, document in documents.items():
        payload = json.dumps(
            statement(kind, image_ref, image_digest, document),
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        envelope = sign_envelope(payload, key)
        manifest_digest, envelope_digest, scheme = attach(
            client,
            repository,
            image_digest,
            envelope.to_bytes(),
            predicate_type=PREDICATES[kind],
            build_id=build_id,
        )
        items.append(
            AttestationRef(
                kind=kind,
                predicate_type=PREDICATES[kind],
                manifest_digest=manifest_digest,
                envelope_digest=envelope_digest,
            )
        )
    return AttestationInfo(signed=True, key_id=key.key_id, scheme=scheme, items=items)


def attest_build(
    documents: dict[str, dict],
    *,
    image_ref: str,
    image_digest: str,
    build_id: str,
    registry_client: Callable[[str], Any] = RegistryClient,
) -> AttestationInfo:
    """The pipeline's entry: sign and attach with FACTORY_SIGNING_KEY's key, never raising.

    Without a key the build is recorded as unsigned (said once per process). A key that cannot be
    used or a registry that refuses is the record's `attestations.error`, so the record is still
    written and nothing it holds is lost.
    """
    global _said_unsigned
    try:
        key = signing_key_from_env()
    except KeyFileError as exc:
        return AttestationInfo(signed=False, error=str(exc))
    if key is None:
        if not _said_unsigned:
            _said_unsigned = True
            log.warning(
                "attestations are unsigned: FACTORY_SIGNING_KEY is not set (make a key with "
                "`factory keys generate --output FILE`)"
            )
        return AttestationInfo(signed=False)
    try:
        return sign_and_attach(
            documents,
            image_ref=image_ref,
            image_digest=image_digest,
            build_id=build_id,
            key=key,
            registry_client=registry_client,
        )
    except (FactoryError, ValueError) as exc:
        msg = f"attaching attestations to {image_ref}@{image_digest} failed: {exc}"
        return AttestationInfo(signed=True, key_id=key.key_id, error=msg)


# --- verifying from the registry ---------------------------------------------------------------


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
        raise _bad(where, "subject", "is missing: the artifact is not attached to any image")
    named = checked_digest(subject.get("digest"), where, "subject.digest")
    if named != image_digest:
        msg = f"{where} is attached to {named}, not to this image {image_digest}"
        raise RegistryError(msg)
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        raise _bad(where, "layers", "must hold exactly one DSSE envelope")
    if layers[0].get("mediaType") != DSSE_MEDIA_TYPE:
        raise _bad(where, "layers[0].mediaType", f"is not {DSSE_MEDIA_TYPE}")
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


# --- retention ---------------------------------------------------------------------------------


def plan_referrer_gc(plan, registry_client) -> None:
    """Add the attestations of every image `plan` deletes: its fallback tag and the artifacts it
    lists (with the referrers API the registry drops them with the subject itself)."""
    from factory.records.retention import ManifestDeletion  # retention calls this

    for deletion in list(plan.deletions):
        tag = fallback_tag(deletion.digest)
        try:
            index_digest = registry_client.head_digest(deletion.repository, tag)
            if index_digest is None:
                continue
            _, referrers = list_referrers(registry_client, deletion.repository, deletion.digest)
        except FactoryError as exc:
            plan.warnings.append(
                f"attestations of {deletion.repository}@{deletion.digest} kept: {exc}"
            )
            continue
        reason = f"attestations of deleted image {deletion.digest}"
        for digest, tags in ((index_digest, (tag,)), *((r.digest, ()) for r in referrers)):
            plan.deletions.append(
                ManifestDeletion(
                    repository=deletion.repository,
                    digest=digest,
                    tags=tags,
                    manifest_id=deletion.manifest_id,
                    platforms=deletion.platforms,
                    newest_record_at=deletion.newest_record_at,
                    reason=reason,
                )
            )
