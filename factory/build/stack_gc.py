"""Stack cache refs no manifest uses any more, for `factory gc`.

`factory prewarm` pushes one cache repository per stack (`factory/stack-<key>-cache`, see
factory/build/prewarm.py). A stack's key changes with its base ref and fragment contents, so every
edit
of a stable fragment leaves the old stack's repository behind. This lists the registry's
repositories, keeps those of the stacks the manifest store has now, and plans the deletion of every
manifest in the others. Only repositories named exactly like a stack cache are considered, and
only images created more than `grace_hours` ago (the image config's `created`): a stack of
another store that is being prewarmed right now on the same registry is not taken from under it.

No Dagster import.
"""

import json
import re
from datetime import datetime, timedelta

from factory.build.prewarm import distinct_stacks
from factory.errors import InvalidNameError, RegistryError, ServiceError
from factory.records.retention import GcPlan, KeptTag, ManifestDeletion
from factory.registry.manifests import MAX_MANIFEST_BYTES, checked_digest
from factory.report.metrics import parse_time
from factory.store.load import LoadedStore

STACK_REPOSITORY = re.compile(r"^factory/stack-(?P<key>[0-9a-f]{12})-cache$")
DEFAULT_GRACE_HOURS = 24.0


def image_created(registry_client, repository: str, digest: str) -> datetime:
    """When an image was built, from its config; RegistryError when the config does not say."""
    _, _, body = registry_client.get_manifest(repository, digest)
    where = f"{repository}@{digest}"
    config = json.loads(body).get("config") or {}
    config_digest = checked_digest(config.get("digest"), where, "config.digest")
    blob = registry_client.get_blob(repository, config_digest, max_bytes=MAX_MANIFEST_BYTES)
    try:
        created = json.loads(blob).get("created")
        return parse_time(created)
    except (ValueError, TypeError, AttributeError, OverflowError):
        msg = f"{where}: the image config has no usable `created` time"
        raise RegistryError(msg) from None


def plan_stack_gc(
    plan: GcPlan,
    store: LoadedStore,
    registry_client,
    *,
    grace_hours: float = DEFAULT_GRACE_HOURS,
) -> None:
    """Add the manifests of unused stack cache repositories to `plan` (a warning if unlistable)."""
    cutoff = plan.now - timedelta(hours=grace_hours)
    used = {stack.key for stack in distinct_stacks(store)}
    try:
        repositories = registry_client.catalog()
    except (RegistryError, InvalidNameError, ServiceError) as exc:
        plan.warnings.append(f"stack cache refs left alone: the catalog cannot be read: {exc}")
        return
    for repository in repositories:
        match = STACK_REPOSITORY.fullmatch(repository)
        if match is None or match["key"] in used:
            continue
        try:
            by_digest: dict[str, list[str]] = {}
            for tag in registry_client.list_tags(repository):
                digest = registry_client.head_digest(repository, tag)
                if digest is not None:
                    by_digest.setdefault(digest, []).append(tag)
        except (RegistryError, InvalidNameError, ServiceError) as exc:
            plan.warnings.append(f"{repository} left alone: {exc}")
            continue
        for digest, tags in sorted(by_digest.items()):
            try:
                created = image_created(registry_client, repository, digest)
            except (RegistryError, InvalidNameError, ServiceError, ValueError) as exc:
                plan.warnings.append(f"{repository}@{digest} left alone: {exc}")
                continue
            if created > cutoff:
                for tag in tags:
                    reason = (
                        f"unused stack, but built {created.isoformat()}, within {grace_hours} h"
                    )
                    plan.kept.append(KeptTag(repository, tag, digest, reason))
                continue
            plan.deletions.append(
                ManifestDeletion(
                    repository=repository,
                    digest=digest,
                    tags=tuple(sorted(tags)),
                    manifest_id="",
                    platforms=tuple(sorted(tags)),
                    newest_record_at="",
                    reason=f"stack {match['key']}: no manifest of the store uses it",
                )
            )
