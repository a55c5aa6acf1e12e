"""Retention: which old images and evidence files to remove (factory/records/gc_apply.py removes
them).

`plan_gc` decides and changes nothing, so `factory gc --dry-run`, the CLI and the weekly Dagster
job all show and do exactly the same thing. What is kept, and why:

- Records are never removed: they are the compatibility history.
- Per manifest x platform the newest `keep` image tags (`factory/<manifest>:<slug>-<12hex>`),
  ordered by the newest record that names each tag, stay in the registry.
- An image manifest is only deleted by digest when no kept tag, no other tag (an index such as
  `release-*` or `latest`, or any tag not made by a build), no entry of a published index and no
  combination's newest record points at it: deleting a digest removes every tag that points at it,
  and deleting an index entry breaks the index.
- Image tags no record names are kept: a build pushes its image before writing its record, so
  such a tag may belong to a build in flight.
- Cache refs (`factory/<manifest>-cache:<slug>`) live in another repository and are not looked at.
- Evidence, SBOM and provenance files of records older than `evidence_days` are removed unless
  the record is a release (its image digest is in a published index, or tagged by a non-build tag)
  or the newest record of its combination (the matrix links to that one's evidence).

Every name that goes into a registry URL is checked first: manifest ids by the store's id grammar,
tags by the OCI tag grammar, digests as `sha256:<64 hex>` (and the client quotes each path
segment). A record whose fields are not usable (`record_store.record_problem`: a build_id with a
`/`, a bad `finished_at`, a manifest id like `../x`) is left out of the plan with a warning; its
image tags then count as untracked and are kept.

Applying a plan, and collecting the registry's blobs after it, is factory/records/gc_apply.py.
"""

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from factory.errors import FactoryError, InvalidNameError, RegistryError
from factory.platforms import BY_NAME, BY_SLUG
from factory.records.gc_source import IndexedRecords, RecordList
from factory.records.model import CompatibilityRecord, newest_by, record_order
from factory.records.retention_defaults import DEFAULT_EVIDENCE_DAYS, DEFAULT_KEEP
from factory.records.store import MANIFEST_ID, LocalRecordStore
from factory.registry.manifests import INDEX_TYPES, parse_index
from factory.registry.names import is_digest, is_tag
from factory.report.metrics import parse_time
from factory.safe_json import printable
from factory.supply_chain.referrers import plan_referrer_gc

# `<slug>-<first 12 hex of build_key>`, as `factory.store.keys.image_ref` names build images.
IMAGE_TAG = re.compile(r"^(?P<slug>[a-z0-9_]+)-(?P<key>[0-9a-f]{12})$")
# The record's `evidence` entries and the record store kinds that hold them.
EVIDENCE_KINDS = ("evidence", "sbom", "provenance")


def repository_of(manifest_id: str) -> str:
    """The registry repository that holds a manifest's images (see `factory.store.keys.image_ref`).

    InvalidNameError for anything but a manifest id (`../x`, `%2e%2e`, `a/b`, ...).
    """
    if not isinstance(manifest_id, str) or not MANIFEST_ID.fullmatch(manifest_id):
        msg = f"{printable(manifest_id, limit=80)!r} is not a manifest id: no registry URL made"
        raise InvalidNameError(msg)
    return f"factory/{manifest_id}"


def record_tag(record: CompatibilityRecord) -> str | None:
    """The image tag a record's build pushes: `<slug>-<first 12 hex of build_key>`."""
    platform = BY_NAME.get(record.platform)
    if platform is None:
        return None
    return f"{platform.slug}-{record.build_key[:12]}"


def _platform(record: CompatibilityRecord) -> str:
    return record.platform


@dataclass(frozen=True)
class ManifestDeletion:
    """One image manifest to delete by digest, with every build tag that goes with it."""

    repository: str
    digest: str
    tags: tuple[str, ...]
    manifest_id: str
    platforms: tuple[str, ...]
    newest_record_at: str
    reason: str = ""  # said instead of the newest record when no record decides (stack refs)

    @classmethod
    def of_records(
        cls,
        repository: str,
        manifest_id: str,
        digest: str,
        tags: Iterable[str],
        records: Iterable[CompatibilityRecord],
    ) -> "ManifestDeletion":
        """The deletion of `digest` and its `tags`, dated and placed by the records naming them."""
        records = list(records)
        return cls(
            repository=repository,
            digest=digest,
            tags=tuple(sorted(tags)),
            manifest_id=manifest_id,
            platforms=tuple(sorted({r.platform for r in records})),
            newest_record_at=max(r.finished_at for r in records),
        )


@dataclass(frozen=True)
class KeptTag:
    """A build tag beyond the newest `keep` (or untracked) that stays, and why."""

    repository: str
    tag: str
    digest: str
    reason: str


@dataclass(frozen=True)
class FileRemoval:
    """One evidence, SBOM or provenance file of an old, non-release record."""

    kind: str
    build_id: str
    manifest_id: str
    platform: str
    finished_at: str


@dataclass(frozen=True)
class GcPlan:
    """What a gc would remove; `warnings` name repositories left alone and why."""

    keep: int
    evidence_days: int
    now: datetime
    deletions: list[ManifestDeletion] = field(default_factory=list)
    kept: list[KeptTag] = field(default_factory=list)
    files: list[FileRemoval] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """Counts for run metadata and the CLI's last line."""
        return {
            "manifests": len(self.deletions),
            "tags": sum(len(d.tags) for d in self.deletions),
            "files": len(self.files),
            "kept_beyond_keep": len(self.kept),
            "release_records": len(self.releases),
            "warnings": len(self.warnings),
        }

    def as_dict(self) -> dict:
        """Everything in the plan, JSON-ready, for `factory gc --json`."""
        return {
            "keep": self.keep,
            "evidence_days": self.evidence_days,
            "now": self.now.isoformat(),
            "summary": self.summary(),
            "deletions": [asdict(d) for d in self.deletions],
            "kept": [asdict(k) for k in self.kept],
            "files": [asdict(f) for f in self.files],
            "releases": list(self.releases),
            "warnings": list(self.warnings),
        }

    def lines(self) -> list[str]:
        """One line per thing to remove or keep, for `factory gc`."""
        out = [
            f"delete {d.repository}@{d.digest} (tags {', '.join(d.tags)}; "
            f"{d.reason or 'newest record ' + d.newest_record_at})"
            for d in self.deletions
        ]
        out += [f"keep   {k.repository}:{k.tag} ({k.reason})" for k in self.kept]
        out += [
            f"remove {f.kind}/{f.build_id} ({f.manifest_id} {f.platform}, {f.finished_at})"
            for f in self.files
        ]
        out += [f"warning: {w}" for w in self.warnings]
        return out


@dataclass
class _Repository:
    """What the registry says about one manifest's repository."""

    build_tags: dict[str, str] = field(default_factory=dict)  # tag -> digest
    published: dict[str, str] = field(default_factory=dict)  # digest -> the tag that pins it


def _read_repository(registry_client, repository: str) -> _Repository:
    """List tags; resolve build tags to digests and everything other tags pin (index entries)."""
    found = _Repository()
    where = f"{getattr(registry_client, 'address', 'registry')}/{repository}"
    for tag in registry_client.list_tags(repository):
        if not is_tag(tag):
            msg = f"{where}: the tags list names {printable(tag, limit=80)!r}, which is not a tag"
            raise RegistryError(msg)
        match = IMAGE_TAG.match(tag)
        if match and match["slug"] in BY_SLUG:
            digest = registry_client.head_digest(repository, tag)
            if digest is not None:  # deleted since the listing
                found.build_tags[tag] = _digest(digest, f"{where}:{tag}")
            continue
        media_type, digest, body = registry_client.get_manifest(repository, tag)
        found.published.setdefault(_digest(digest, f"{where}:{tag}"), tag)
        if media_type in INDEX_TYPES:
            # Every entry, attestation manifests included: deleting any of them breaks the index.
            for entry in parse_index(body, f"{where}:{tag}"):
                found.published.setdefault(entry.descriptor.digest, tag)
    return found


def _repositories(registry_client) -> set[str] | None:
    """The registry's repositories in one listing, or None when it cannot list them (then each
    manifest's repository is asked for its tags, as registries without `/v2/_catalog` need)."""
    catalog = getattr(registry_client, "catalog", None)
    if catalog is None:
        return None
    try:
        return set(catalog())
    except FactoryError:  # not offered, refused, or down: the per-repository path says which
        return None


def _digest(value: object, where: str) -> str:
    if not is_digest(value):
        msg = f"{where}: the registry named {printable(value, limit=80)!r}, which is not a digest"
        raise RegistryError(msg)
    return str(value)


def plan_gc(
    records: "Iterable[CompatibilityRecord] | IndexedRecords",
    registry_client,
    *,
    keep: int = DEFAULT_KEEP,
    evidence_days: int = DEFAULT_EVIDENCE_DAYS,
    now: datetime | None = None,
    data_dir: Path | None = None,
) -> GcPlan:
    """Decide what to remove (see the module docstring); the registry is only read.

    `records` is every record, or `factory.records.gc_source.IndexedRecords`, which reads from the
    records index only the records the registry's tags and the evidence cutoff make relevant.

    `registry_client` needs `list_tags`, `head_digest` and `get_manifest`, as `RegistryClient`
    has. With `data_dir`, only evidence files that still exist there are listed, so a dry run
    after a gc lists nothing twice. A repository whose non-build tags cannot be read is left
    alone (and its records' evidence kept), with a warning: what it pins is unknown.
    """
    if keep < 1:
        msg = f"keep must be at least 1 (got {keep}): the newest image of each combination stays"
        raise ValueError(msg)
    if evidence_days < 0:
        msg = f"evidence_days must not be negative (got {evidence_days})"
        raise ValueError(msg)
    now = now or datetime.now(UTC)
    plan = GcPlan(keep=keep, evidence_days=evidence_days, now=now)
    source = records if hasattr(records, "for_images") else RecordList(records)
    plan.warnings.extend(source.warnings)

    manifests = source.manifests()
    present = _repositories(registry_client) if manifests else None
    published: dict[str, set[str] | None] = {}  # manifest -> pinned digests; None = unknown
    for manifest_id in manifests:
        repository = repository_of(manifest_id)
        if present is not None and repository not in present:
            published[manifest_id] = set()  # no repository: no tag to delete, nothing pinned
            continue
        try:
            found = _read_repository(registry_client, repository)
        except (RegistryError, InvalidNameError) as exc:
            plan.warnings.append(f"{repository} left alone: {exc}")
            published[manifest_id] = None
            continue
        published[manifest_id] = set(found.published)
        plan.releases.extend(source.released(manifest_id, set(found.published)))
        if found.build_tags:
            named = source.for_images(manifest_id, set(found.build_tags), set(found.published))
            _plan_images(plan, manifest_id, repository, named, found)
    # Quarantined images of failing records: the newest `keep` per combination stay.
    from factory.supply_chain.quarantine import plan_quarantine_gc  # it imports this module

    plan_quarantine_gc(plan, source.quarantined(), registry_client)
    # The signed attestations attached to the images deleted above go with them.
    plan_referrer_gc(plan, registry_client)

    store = LocalRecordStore(data_dir) if data_dir is not None else None
    cutoff = now - timedelta(days=evidence_days)
    for manifest_id, candidates in source.for_evidence(cutoff).items():
        pinned = published.get(manifest_id)
        current = newest_by(candidates, _platform)
        for record in sorted(candidates, key=record_order):
            digest = record.image.digest if record.image else None
            if pinned is None or (digest is not None and digest in pinned):
                continue
            # The matrix links to each combination's newest record: its evidence stays.
            if parse_time(record.finished_at) >= cutoff or current[record.platform] is record:
                continue
            for kind in EVIDENCE_KINDS:
                if store is not None:
                    if not store.path(kind, record.build_id).exists():
                        continue
                elif record.evidence.get("log" if kind == "evidence" else kind) is None:
                    continue
                plan.files.append(
                    FileRemoval(
                        kind=kind,
                        build_id=record.build_id,
                        manifest_id=record.manifest_id,
                        platform=record.platform,
                        finished_at=record.finished_at,
                    )
                )
    return plan


def _plan_images(
    plan: GcPlan,
    manifest_id: str,
    repository: str,
    records: list[CompatibilityRecord],
    found: _Repository,
) -> None:
    """Add one repository's deletions and notable kept tags to the plan."""
    newest_for_tag = newest_by(records, record_tag)
    newest_for_combination = newest_by(records, _platform)

    # Why each digest must stay; a digest is only deleted when nothing here names it.
    protected: dict[str, str] = {
        digest: f"pinned by tag {tag}" for digest, tag in found.published.items()
    }
    for platform, record in newest_for_combination.items():
        if record.image and record.image.digest:
            protected.setdefault(record.image.digest, f"newest {platform} record's image")

    by_slug: dict[str, list[str]] = {}
    for tag in found.build_tags:
        by_slug.setdefault(tag.rsplit("-", 1)[0], []).append(tag)
    candidates: list[str] = []
    for slug in sorted(by_slug):
        tracked = [t for t in by_slug[slug] if t in newest_for_tag]
        tracked.sort(key=lambda t: record_order(newest_for_tag[t]), reverse=True)
        for tag in tracked[: plan.keep]:
            protected.setdefault(found.build_tags[tag], f"same image as kept tag {tag}")
        candidates += tracked[plan.keep :]
        for tag in sorted(set(by_slug[slug]) - set(tracked)):
            digest = found.build_tags[tag]
            plan.kept.append(
                KeptTag(repository, tag, digest, "no record names it yet (a build in flight?)")
            )
            protected.setdefault(digest, f"same image as untracked tag {tag}")

    doomed: dict[str, list[str]] = {}
    for tag in candidates:
        digest = found.build_tags[tag]
        if digest in protected:
            plan.kept.append(KeptTag(repository, tag, digest, protected[digest]))
        else:
            doomed.setdefault(digest, []).append(tag)
    for digest, tags in sorted(
        doomed.items(), key=lambda item: max(record_order(newest_for_tag[t]) for t in item[1])
    ):
        named = [newest_for_tag[t] for t in tags]
        plan.deletions.append(
            ManifestDeletion.of_records(repository, manifest_id, digest, tags, named)
        )
