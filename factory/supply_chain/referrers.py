"""An image's referrers: the OCI 1.1 list of artifacts whose `subject` is the image.

Registries with the referrers API answer the list themselves; for the others (distribution 2.8,
Debian's docker-registry) the fallback tag `sha256-<hex of the image digest>` holds an OCI index
listing the image's referrers (factory/supply_chain/attestation.py adds to it). `list_referrers`
reads either, checking every field of what the registry sent; `plan_referrer_gc` adds to a gc
plan the referrers of the images it deletes.

No Dagster import.
"""

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from factory.errors import FactoryError, RegistryError
from factory.registry.client import RegistryClient
from factory.registry.manifests import (
    MAX_INDEX_ENTRIES,
    OCI_INDEX,
    answer_error,
    checked_digest,
    checked_size,
    parse_json_object,
)

if TYPE_CHECKING:  # retention imports this module
    from factory.records.retention import GcPlan

MAX_ANNOTATIONS = 64


def fallback_tag(digest: str) -> str:
    """The OCI 1.1 referrers fallback tag of a digest: `sha256-<hex>`."""
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}-{hex_part}"


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


def parse_referrers(body: bytes, where: str) -> list[Referrer]:
    """The entries of a referrers index (API answer or fallback tag), every field checked."""
    index = parse_json_object(body, where)
    manifests = index.get("manifests")
    if manifests is None:
        return []
    if not isinstance(manifests, list):
        raise answer_error(where, "manifests", "is not a list")
    if len(manifests) > MAX_INDEX_ENTRIES:
        raise answer_error(
            where, "manifests", f"has {len(manifests)} entries (at most {MAX_INDEX_ENTRIES})"
        )
    found = []
    for n, entry in enumerate(manifests):
        field = f"manifests[{n}]"
        if not isinstance(entry, dict):
            raise answer_error(where, field, "is not an object")
        media_type = entry.get("mediaType")
        if not isinstance(media_type, str) or len(media_type) > 255:
            raise answer_error(where, f"{field}.mediaType", "is not a media type")
        artifact_type = entry.get("artifactType")
        if artifact_type is not None and (
            not isinstance(artifact_type, str) or len(artifact_type) > 255
        ):
            raise answer_error(where, f"{field}.artifactType", "is not a media type")
        annotations = entry.get("annotations") or {}
        if (
            not isinstance(annotations, dict)
            or len(annotations) > MAX_ANNOTATIONS
            or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 255 and len(v) <= 4096
                for k, v in annotations.items()
            )
        ):
            raise answer_error(where, f"{field}.annotations", "is not a small map of strings")
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


# --- retention ---------------------------------------------------------------------------------


def plan_referrer_gc(plan: "GcPlan", registry_client) -> None:
    """Add the attestations of every image `plan` deletes: its fallback tag and the artifacts it
    lists (with the referrers API the registry drops them with the subject itself)."""
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
        # Each goes with its image: same repository, manifest, platforms and record time.
        for digest, tags in ((index_digest, (tag,)), *((r.digest, ()) for r in referrers)):
            plan.deletions.append(replace(deletion, digest=digest, tags=tags, reason=reason))
