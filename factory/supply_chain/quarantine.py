"""Quarantine: the image of a failing record lives only under `factory-quarantine/<id>:<tag>`.

Nothing in `factory/<id>` is ever a failing image, so whoever pulls from there gets only images
that passed. When a build's record is `fail` or `error` and an image was pushed, the image
manifest is copied (its blobs mounted, the same bytes, so the same digest) to the quarantine
repository under the same tag, then deleted by digest from `factory/<id>`, which removes its tag
there. A digest that something else in `factory/<id>` still pins (a release index, a non-build
tag) is not deleted: that is the record's `quarantine.error`, not a broken release.

A re-test of a quarantined image (same build key, the tests changed) pulls it from quarantine
instead of rebuilding; if it then passes, `release` copies it back to `factory/<id>` and drops the
quarantine tag before the record is written.

`plan_quarantine_gc` adds to a gc plan the quarantined tags beyond the newest `keep` per
manifest x platform. Every failure is returned as a message, never raised into the build: a
record is written either way and says what happened.

No Dagster import.
"""

import json
import re
from collections.abc import Callable
from typing import Any

from factory.errors import FactoryError, InvalidNameError, RegistryError
from factory.platforms import BY_SLUG
from factory.records.model import CompatibilityRecord, QuarantineInfo, newest_by, record_order
from factory.records.retention import IMAGE_TAG, GcPlan, ManifestDeletion, repository_of
from factory.registry.client import RegistryClient
from factory.registry.manifests import IMAGE_TYPES, INDEX_TYPES, parse_index
from factory.registry.names import split_reference

QUARANTINE_NAMESPACE = "factory-quarantine"
_IMAGE_REPOSITORY = re.compile(r"^factory/(?P<id>[a-z0-9][a-z0-9_-]{0,62})$")


def quarantine_repository(repository: str) -> str:
    """`factory/<id>` -> `factory-quarantine/<id>`; InvalidNameError for any other repository."""
    match = _IMAGE_REPOSITORY.fullmatch(repository)
    if match is None:
        msg = f"{repository!r} is not a Factory image repository (factory/<manifest id>)"
        raise InvalidNameError(msg)
    return f"{QUARANTINE_NAMESPACE}/{match['id']}"


def quarantine_ref(image_ref: str) -> str:
    """Where a build image's failing twin lives: the same tag in `factory-quarantine/<id>`."""
    address, repository, tag = split_reference(image_ref)
    return f"{address}/{quarantine_repository(repository)}:{tag}"


def copy_image(client: RegistryClient, source: str, digest: str, target: str, tag: str) -> None:
    """Tag the image manifest `source@digest` as `target:tag` (blobs mounted, bytes unchanged)."""
    media_type, _, body = client.get_manifest(source, digest)
    if media_type not in IMAGE_TYPES:
        msg = f"{client.address}/{source}@{digest} is a {media_type}, not a single image"
        raise RegistryError(msg)
    manifest = json.loads(body)  # checked by get_manifest: config and layers are digests
    for blob in [manifest["config"], *manifest["layers"]]:
        client.mount_blob(target, blob["digest"], source)
    client.put_manifest(target, tag, media_type, body)


def _pinned_by(client: RegistryClient, repository: str, digest: str, own_tag: str) -> str | None:
    """A tag other than a build tag that still needs `digest` in `repository`, if any."""
    for tag in client.list_tags(repository):
        if tag == own_tag or (IMAGE_TAG.match(tag) and IMAGE_TAG.match(tag)["slug"] in BY_SLUG):
            continue
        media_type, tagged, body = client.get_manifest(repository, tag)
        if tagged == digest:
            return tag
        if media_type in INDEX_TYPES and any(
            e.descriptor.digest == digest for e in parse_index(body, f"{repository}:{tag}")
        ):
            return tag
    return None


def quarantine_image(
    image_ref: str, digest: str, *, registry_client: Callable[[str], Any] = RegistryClient
) -> QuarantineInfo:
    """Move a failing build's image to quarantine (module docstring); never raises."""
    try:
        target_ref = quarantine_ref(image_ref)
        address, repository, tag = split_reference(image_ref)
        client = registry_client(address)
        target = quarantine_repository(repository)
        if client.head_manifest(repository, digest) is not None:
            copy_image(client, repository, digest, target, tag)
        elif client.head_digest(target, tag) != digest:
            msg = f"{image_ref}@{digest} is neither in {repository} nor in {target}"
            return QuarantineInfo(error=msg)
        pinned = _pinned_by(client, repository, digest, tag)
        if pinned is not None:
            msg = (
                f"copied to {target_ref}, but {address}/{repository}:{pinned} still pins "
                f"{digest}, so it stays in {repository}: unpublish it, then run `factory gc`"
            )
            return QuarantineInfo(ref=target_ref, error=msg)
        client.delete_manifest(repository, digest)
    except (FactoryError, ValueError) as exc:
        return QuarantineInfo(error=f"quarantining {image_ref}@{digest} failed: {exc}")
    return QuarantineInfo(ref=target_ref)


def quarantined_digest(
    image_ref: str, *, registry_client: Callable[[str], Any] = RegistryClient
) -> str | None:
    """The digest of the quarantined image for a build ref, if quarantine holds one."""
    address, repository, tag = split_reference(image_ref)
    return registry_client(address).head_digest(quarantine_repository(repository), tag)


def release(
    image_ref: str, digest: str, *, registry_client: Callable[[str], Any] = RegistryClient
) -> None:
    """Put a quarantined image that now passed back under `image_ref`; drop the quarantine tag."""
    address, repository, tag = split_reference(image_ref)
    client = registry_client(address)
    source = quarantine_repository(repository)
    copy_image(client, source, digest, repository, tag)
    client.delete_manifest(source, digest)


# --- retention ---------------------------------------------------------------------------------


def _quarantine_tag(record: CompatibilityRecord) -> str | None:
    """The tag of the record's quarantined image, None when it has none."""
    ref = record.quarantine.ref if record.quarantine else None
    return ref.rsplit(":", 1)[-1] if ref else None


def plan_quarantine_gc(
    plan: GcPlan, by_manifest: dict[str, list[CompatibilityRecord]], registry_client
) -> None:
    """Add quarantined tags beyond the newest `plan.keep` per manifest x platform to `plan`.

    Tags are ordered by the newest record that names them; a tag no record names is kept (a
    build in flight), and so is a digest that a kept tag also points at.
    """
    for manifest_id in sorted(by_manifest):
        newest = newest_by(by_manifest[manifest_id], _quarantine_tag)
        if not newest:
            continue
        try:
            repository = quarantine_repository(repository_of(manifest_id))
            tags = {
                t: registry_client.head_digest(repository, t)
                for t in registry_client.list_tags(repository)
                if t in newest
            }
        except (RegistryError, InvalidNameError) as exc:
            plan.warnings.append(f"quarantine of {manifest_id} left alone: {exc}")
            continue
        by_slug: dict[str, list[str]] = {}
        for tag, digest in tags.items():
            if digest is not None:
                by_slug.setdefault(tag.rsplit("-", 1)[0], []).append(tag)
        kept_digests: set[str] = set()
        doomed: dict[str, list[str]] = {}
        for slug_tags in by_slug.values():
            slug_tags.sort(key=lambda t: record_order(newest[t]), reverse=True)
            kept_digests.update(tags[t] for t in slug_tags[: plan.keep])  # type: ignore[misc]
            for tag in slug_tags[plan.keep :]:
                doomed.setdefault(tags[tag], []).append(tag)  # type: ignore[arg-type]
        for digest, doomed_tags in sorted(doomed.items()):
            if digest in kept_digests:
                continue
            named = [newest[t] for t in doomed_tags]
            plan.deletions.append(
                ManifestDeletion.of_records(repository, manifest_id, digest, doomed_tags, named)
            )
