"""The multi-arch publish gate: a manifest's index tag, only when every platform it needs passed.

A manifest is published as one multi-arch index (`docker pull <registry>/factory/<id>:latest`
picks the right architecture) only when its matrix row is all green for the store's current
inputs. A partial row is shown with its reasons and never published: a user pulling `:latest`
on arm64 must not get an image that failed (or was never tested) there.

Rules:
- Required platforms: every platform the manifest lists, except a GPU platform whose plan item
  says `no_executor` (nothing here can run it, so it can neither pass nor block). A GPU platform
  with an executor is required like any other.
- A required platform is ready when its newest record is `pass`, carries an image digest, and has
  the plan item's `record_key` (inputs unchanged since the test).
- `linux/amd64+gpu` and `linux/amd64` are the same OCI platform, and an index holds one image per
  platform. When both are required, the plain amd64 image goes in the index and the GPU one only
  gates; when the manifest lists the GPU platform alone (of the two), its image is the index's
  `linux/amd64` entry.
- Tags: `release-<12 hex>` where the hex is a sha256 over each required platform's (platform,
  record_key, image digest), and `latest`. The digest is part of the name because a forced
  rebuild with unchanged keys can give a different image: a release tag names one content and is
  never moved; `latest` follows the newest release.
- Publishing is idempotent: the index body is built deterministically from the registry's own
  descriptors, so the same decision gives the same index digest, and tags that already point at
  it are left alone.
"""

import hashlib
import json
from dataclasses import asdict, dataclass

from factory.errors import FactoryError, RegistryError
from factory.plan.decisions import PlanItem, RecordIndex
from factory.platforms import BY_NAME, PLATFORMS
from factory.registry.client import RegistryClient
from factory.registry.manifests import build_index
from factory.registry.names import sha256_digest, split_reference
from factory.store.keys import canonical_json
from factory.store.load import LoadedStore

READY = "ready"
PARTIAL = "partial"
RELEASE_PREFIX = "release-"
LATEST_TAG = "latest"
RELEASE_HASH_CHARS = 12

PASS, FAIL, ERROR, PENDING, STALE, NOT_RUN = "pass", "fail", "error", "pending", "stale", "not run"


@dataclass(frozen=True)
class PlatformState:
    """Where one platform of a manifest stands for publishing."""

    platform: str
    state: str  # pass | fail | error | pending | stale | not run
    required: bool
    reason: str = ""  # why this platform blocks (or is ignored); empty when it is ready
    build_id: str | None = None
    image_ref: str | None = None  # the per-platform tag the record names
    digest: str | None = None  # the image manifest digest the record names
    record_key: str | None = None  # the newest record's key

    @property
    def ok(self) -> bool:
        """Whether this platform lets the manifest publish (ready, or not required)."""
        return not self.required or (self.state == PASS and not self.reason)


@dataclass(frozen=True)
class PublishDecision:
    """A manifest's publish gate: `ready` or `partial`, per-platform states and the reasons."""

    manifest_id: str
    status: str  # ready | partial
    platforms: tuple[PlatformState, ...]
    reasons: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return self.status == READY

    def index_entries(self) -> list[tuple[PlatformState, str]]:
        """(platform state, OCI platform) of the images the index holds, in table order.

        One entry per OCI platform: a GPU image is left out when the plain one for the same OCI
        platform is in (see the module docstring).
        """
        chosen: dict[str, PlatformState] = {}
        for state in self.platforms:
            if not state.required:
                continue
            platform = BY_NAME[state.platform]
            current = chosen.get(platform.oci_platform)
            if current is None or (BY_NAME[current.platform].gpu and not platform.gpu):
                chosen[platform.oci_platform] = state
        order = {p.name: n for n, p in enumerate(PLATFORMS)}
        return sorted(((s, oci) for oci, s in chosen.items()), key=lambda e: order[e[0].platform])

    @property
    def release_tag(self) -> str | None:
        """`release-<hash>` for a ready decision; None for a partial one."""
        if not self.ready:
            return None
        content = [
            {"platform": s.platform, "record_key": s.record_key, "digest": s.digest}
            for s in self.platforms
            if s.required
        ]
        digest = hashlib.sha256(canonical_json(content)).hexdigest()
        return RELEASE_PREFIX + digest[:RELEASE_HASH_CHARS]

    def as_dict(self) -> dict:
        """JSON-ready, for asset metadata and `--json` output."""
        return {**asdict(self), "release_tag": self.release_tag}


def _platform_state(
    manifest_id: str, name: str, item: PlanItem | None, records_index: RecordIndex
) -> PlatformState:
    last = records_index.latest.get((manifest_id, name))
    if item is not None and "no_executor" in item.reasons:
        return PlatformState(name, NOT_RUN, False, "no executor here: not required")
    found: dict[str, str | None] = {}
    if last is not None:
        found = {
            "build_id": last.build_id,
            "image_ref": last.image.ref if last.image else None,
            "digest": last.image.digest if last.image else None,
            "record_key": last.record_key,
        }
    if item is None:
        return PlatformState(name, PENDING, True, "not in the plan: current keys unknown", **found)
    if last is None:
        return PlatformState(name, PENDING, True, "never recorded")
    if last.record_key != item.record_key:
        return PlatformState(
            name, STALE, True, f"newest record ({last.status}) is for older inputs", **found
        )
    if last.status != PASS:
        detail = f": stage {last.error.stage}" if last.error else ""
        return PlatformState(
            name, last.status, True, f"newest record is {last.status}{detail}", **found
        )
    if not found["digest"]:
        return PlatformState(name, PASS, True, "the passing record names no image digest", **found)
    return PlatformState(name, PASS, True, **found)


def publish_plan(
    store: LoadedStore, records_index: RecordIndex, plan_items: list[PlanItem]
) -> list[PublishDecision]:
    """One decision per manifest that has plan items, in manifest id order.

    `plan_items` are the current plan (`factory.plan.decisions.plan`): they carry the keys the
    records
    must match and whether a GPU platform has an executor here.
    """
    items = {(i.manifest_id, i.platform): i for i in plan_items}
    decisions = []
    for manifest_id in sorted({i.manifest_id for i in plan_items}):
        listed = set(store.manifest(manifest_id).platforms)
        states = tuple(
            _platform_state(manifest_id, p.name, items.get((manifest_id, p.name)), records_index)
            for p in PLATFORMS
            if p.name in listed
        )
        reasons = [f"{s.platform}: {s.state}: {s.reason}" for s in states if not s.ok]
        if not any(s.required for s in states):
            reasons.append("no platform it lists can be run here")
        decisions.append(
            PublishDecision(
                manifest_id=manifest_id,
                status=PARTIAL if reasons else READY,
                platforms=states,
                reasons=tuple(reasons),
            )
        )
    return decisions


def _repository(decision: PublishDecision, registry_client: RegistryClient) -> str:
    """The one repository every indexed image lives in, on the client's registry."""
    places = set()
    for state, _ in decision.index_entries():
        registry, repository, _ = split_reference(state.image_ref or "")
        places.add((registry, repository))
    if len(places) != 1:
        msg = (
            f"manifest {decision.manifest_id}: its images live in {sorted(places)}; an index "
            "can only reference images of its own repository"
        )
        raise FactoryError(msg)
    [(registry, repository)] = places
    if registry != registry_client.address:
        msg = (
            f"manifest {decision.manifest_id}: the records name images on {registry}, but the "
            f"registry client is for {registry_client.address}: publish with a client for "
            f"{registry}"
        )
        raise FactoryError(msg)
    return repository


def publish(decision: PublishDecision, registry_client: RegistryClient) -> str:
    """Tag the manifest's multi-arch index as its release tag and `latest`; return its digest.

    Refuses a partial decision. Each image is checked in the registry (it must exist and be a
    single-platform image) before the index is written, and a tag already pointing at the index
    is not written again, so a second call with the same decision changes nothing.
    """
    if not decision.ready:
        msg = (
            f"manifest {decision.manifest_id} is not ready to publish: "
            f"{'; '.join(decision.reasons)}. Run `factory run --manifest-id "
            f"{decision.manifest_id}` and publish when every platform passes"
        )
        raise FactoryError(msg)
    repository = _repository(decision, registry_client)
    entries = [
        (
            registry_client.image_descriptor(
                repository,
                state.digest or "",
                missing=f"({decision.manifest_id} {state.platform}, build {state.build_id}) is "
                "not in the registry: re-run it with "
                f"`factory run --force --manifest-id {decision.manifest_id}`",
            ),
            oci_platform,
        )
        for state, oci_platform in decision.index_entries()
    ]
    body = build_index(entries)
    media_type = json.loads(body)["mediaType"]
    index_digest = sha256_digest(body)
    release = decision.release_tag or ""
    current = registry_client.head_digest(repository, release)
    if current is None:
        registry_client.put_manifest(repository, release, media_type, body)
    elif current != index_digest:
        msg = (
            f"{registry_client.address}/{repository}:{release} already names {current}, not "
            f"{index_digest}: release tags are never moved; check who wrote that tag"
        )
        raise RegistryError(msg)
    if registry_client.head_digest(repository, LATEST_TAG) != index_digest:
        registry_client.put_manifest(repository, LATEST_TAG, media_type, body)
    return index_digest
