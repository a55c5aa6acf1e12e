"""A built image when its record is written: attested if it passed, else quarantined.

Called by the pipeline just before the record is written, so the record carries the outcome
(attestation digests, the quarantine ref, or the error that stopped either). Never raises: a
registry that refuses is the record's error field, and the record is written all the same.

No Dagster import.
"""

import logging
from collections.abc import Callable
from typing import Any

from factory.errors import FactoryError
from factory.records.model import AttestationInfo, QuarantineInfo
from factory.records.store import RecordStore
from factory.registry.client import RegistryClient
from factory.safe_json import parse_json
from factory.supply_chain.attestation import attest_build
from factory.supply_chain.quarantine import quarantine_image, release

# record.evidence key -> RecordStore kind of the documents that are signed and attached.
ATTESTED_KINDS = ("sbom", "provenance")

log = logging.getLogger(__name__)


def seal_image(
    *,
    status: str,
    build_id: str,
    image_ref: str,
    image_digest: str | None,
    from_quarantine: bool,
    records: RecordStore,
    registry_client: Callable[[str], Any] = RegistryClient,
) -> tuple[AttestationInfo | None, QuarantineInfo | None]:
    """(attestations, quarantine) for the record of a build whose image is `image_digest`."""
    if not image_digest:
        return None, None
    if status != "pass":
        quarantine = quarantine_image(image_ref, image_digest, registry_client=registry_client)
        if quarantine.error:
            log.warning("build %s: %s", build_id, quarantine.error)
        return None, quarantine
    if from_quarantine:
        try:
            release(image_ref, image_digest, registry_client=registry_client)
        except (FactoryError, ValueError) as exc:
            msg = f"the image passed but could not leave quarantine for {image_ref}: {exc}"
            log.warning("build %s: %s", build_id, msg)
            return AttestationInfo(error=msg), None
    documents = {}
    for kind in ATTESTED_KINDS:
        data = records.get(kind, build_id)
        if data is not None:
            documents[kind] = parse_json(data, records.where(kind, build_id))
    attestations = attest_build(
        documents,
        image_ref=image_ref,
        image_digest=image_digest,
        build_id=build_id,
        registry_client=registry_client,
    )
    if attestations.error:
        log.warning("build %s: %s", build_id, attestations.error)
    return attestations, None
