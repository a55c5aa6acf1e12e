"""Signed attestations: made for a passing build and attached to its image in the registry.

A passing build's SBOM and provenance become in-toto Statements (subject: the image's repository
and digest), each signed as a DSSE envelope with the key FACTORY_SIGNING_KEY names, and pushed to
the image's repository as an OCI 1.1 artifact: a manifest whose one layer is the envelope and whose
`subject` is the image manifest. Registries with the referrers API index the artifact themselves;
for the others (distribution 2.8, Debian's docker-registry) the OCI 1.1 fallback tag
`sha256-<hex of the image digest>` holds an OCI index listing the image's referrers
(factory/supply_chain/referrers.py), updated here.

Checking them from the registry is factory/supply_chain/attestation_verify.py.

No Dagster import.
"""

import json
import logging
from collections.abc import Callable
from typing import Any

from factory.errors import FactoryError
from factory.records.model import AttestationInfo, AttestationRef
from factory.registry.client import RegistryClient
from factory.registry.manifests import OCI_INDEX, OCI_MANIFEST
from factory.registry.names import sha256_digest, split_reference
from factory.supply_chain.dsse import sign_envelope
from factory.supply_chain.provenance import PREDICATE_TYPE as PROVENANCE_PREDICATE
from factory.supply_chain.provenance import STATEMENT_TYPE, image_repository
from factory.supply_chain.referrers import Referrer, fallback_tag, list_referrers
from factory.supply_chain.signing_keys import KeyFileError, SigningKey, signing_key_from_env

SBOM_PREDICATE = "https://cyclonedx.org/bom"
PREDICATES = {"sbom": SBOM_PREDICATE, "provenance": PROVENANCE_PREDICATE}
KIND_OF_PREDICATE = {v: k for k, v in PREDICATES.items()}
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
BUILD_ANNOTATION = "io.factory.build-id"
# A concurrent build may rewrite the fallback tag between our read and write: re-read and retry.
FALLBACK_ATTEMPTS = 3

log = logging.getLogger(__name__)
_said_unsigned = False


class AttestationError(FactoryError):
    """An attestation could not be made or pushed."""


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
