"""Prune Factory's Docker Engine: old build images and build cache past a size limit.

An executor's engine keeps every image it built or pulled and BuildKit's cache of every step; left
alone its disk grows without bound. `plan_engine_prune` decides and changes nothing (so
`factory gc --engine --dry-run`, the real run and the retention job agree):

- Build images (`<registry>/factory/<id>:<slug>-<12 hex>`, and their quarantined twins under
  `factory-quarantine/<id>`): per manifest x platform the newest `keep` stay (by the image's
  creation time); older tags are removed. Removing a tag frees the image only when it was its
  last tag (a cache ref or a newer build may still name it).
- Untagged images that Factory built (they carry its `io.factory.build-key` label) go too.
- An image that any container uses (running or not) is never touched: it is listed as kept.
- Build cache beyond FACTORY_ENGINE_CACHE_GB (default 10) is pruned, least recently used first,
  by BuildKit itself (`keep-storage`); cache that a running build uses is never removed.

Base images, cache refs, stack refs and anything not named as above are left alone.
No Dagster import.
"""

import os
import re
from dataclasses import asdict, dataclass, field

import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from factory.build.engine import Engine
from factory.errors import ServiceError
from factory.platforms import BY_SLUG
from factory.settings import SettingsError

CACHE_LIMIT_ENV = "FACTORY_ENGINE_CACHE_GB"
DEFAULT_CACHE_GB = 10.0
BUILD_KEY_LABEL = "io.factory.build-key"
_BUILD_TAG = re.compile(
    r"^(?P<repo>.+/factory(?:-quarantine)?/(?P<id>[a-z0-9][a-z0-9_-]{0,62})):"
    r"(?P<slug>[a-z0-9_]+)-[0-9a-f]{12}$"
)


def cache_limit_bytes() -> int:
    """FACTORY_ENGINE_CACHE_GB as bytes (decimal GB, may be fractional; 0 keeps no cache)."""
    raw = os.environ.get(CACHE_LIMIT_ENV, "").strip()
    if not raw:
        return int(DEFAULT_CACHE_GB * 1e9)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value < 1e6):
        msg = f"{CACHE_LIMIT_ENV}={raw[:40]!r} is not a size in GB (a number from 0)"
        raise SettingsError(msg)
    return int(value * 1e9)


@dataclass(frozen=True)
class ImageRemoval:
    """One tag (or, for an untagged image, its id) to remove, and what that frees."""

    ref: str
    image_id: str
    combination: str  # `<manifest id> <platform slug>`, or "untagged"
    created: int
    frees_bytes: int  # the image's own bytes when this removes its last name, else 0


@dataclass(frozen=True)
class KeptImage:
    ref: str
    image_id: str
    reason: str


@dataclass
class EnginePrunePlan:
    """What an engine prune would remove."""

    docker_host: str
    keep: int
    cache_limit_bytes: int
    cache_bytes: int = 0
    cache_reclaimable_bytes: int = 0
    removals: list[ImageRemoval] = field(default_factory=list)
    kept: list[KeptImage] = field(default_factory=list)

    @property
    def image_bytes(self) -> int:
        return sum(r.frees_bytes for r in self.removals)

    def lines(self) -> list[str]:
        out = [
            f"remove {r.ref} ({r.combination}, image {r.image_id[7:19]}, "
            f"{'frees ' + str(r.frees_bytes) + ' bytes' if r.frees_bytes else 'untag only'})"
            for r in self.removals
        ]
        out += [f"keep   {k.ref} ({k.reason})" for k in self.kept]
        over = max(0, self.cache_bytes - self.cache_limit_bytes)
        out.append(
            f"build cache {self.cache_bytes} bytes, limit {self.cache_limit_bytes}: "
            + (
                f"prune about {min(over, self.cache_reclaimable_bytes)} bytes (least recently "
                "used, not in use)"
                if over
                else "nothing to prune"
            )
        )
        return out

    def as_dict(self) -> dict:
        """Every field (removals and kept as dicts too) and the image bytes they would free."""
        return {**asdict(self), "image_bytes": self.image_bytes}


@dataclass(frozen=True)
class EnginePruneResult:
    removed: list[str]
    failed: list[str]
    layers_bytes_before: int
    layers_bytes_after: int
    cache_bytes_reclaimed: int

    @property
    def image_bytes_freed(self) -> int:
        return max(0, self.layers_bytes_before - self.layers_bytes_after)


def _df(engine: Engine) -> dict:
    try:
        return engine.client.df()
    except (APIError, DockerException, requests.RequestException) as exc:
        msg = f"the Docker Engine at {engine.docker_host} did not report its disk usage: {exc}"
        raise ServiceError(msg) from exc


def _used_images(engine: Engine) -> dict[str, str]:
    """image id -> how a container uses it (`running container X` wins over stopped ones)."""
    used: dict[str, str] = {}
    try:
        containers = engine.client.api.containers(all=True)
    except (APIError, DockerException, requests.RequestException) as exc:
        msg = f"the Docker Engine at {engine.docker_host} did not list its containers: {exc}"
        raise ServiceError(msg) from exc
    for c in containers:
        image_id = c.get("ImageID") or ""
        name = ((c.get("Names") or ["?"])[0]).lstrip("/")
        state = c.get("State") or "unknown"
        if state == "running" or image_id not in used:
            used[image_id] = f"{state} container {name}"
    return used


def plan_engine_prune(
    engine: Engine, *, keep: int, registry: str, cache_limit: int | None = None
) -> EnginePrunePlan:
    """Decide what to remove from `engine` (module docstring); changes nothing."""
    if keep < 1:
        msg = f"keep must be at least 1 (got {keep})"
        raise ValueError(msg)
    limit = cache_limit_bytes() if cache_limit is None else cache_limit
    plan = EnginePrunePlan(engine.docker_host, keep, limit)
    df = _df(engine)
    used = _used_images(engine)
    prefixes = (f"{registry}/factory/", f"{registry}/factory-quarantine/")
    by_combination: dict[str, list[tuple[int, str, dict]]] = {}
    for image in df.get("Images") or []:
        if not isinstance(image, dict) or not isinstance(image.get("Id"), str):
            continue
        tags = [
            t for t in image.get("RepoTags") or [] if isinstance(t, str) and t != "<none>:<none>"
        ]
        labels = image.get("Labels") or {}
        if not tags:
            if isinstance(labels, dict) and BUILD_KEY_LABEL in labels:
                by_combination.setdefault("untagged", []).append((0, image["Id"], image))
            continue
        for tag in tags:
            match = _BUILD_TAG.match(tag)
            if match and tag.startswith(prefixes) and match["slug"] in BY_SLUG:
                quarantined = "factory-quarantine/" in match["repo"]
                key = f"{match['id']} {match['slug']}{' (quarantine)' if quarantined else ''}"
                by_combination.setdefault(key, []).append(
                    (int(image.get("Created") or 0), tag, image)
                )
    removing: dict[str, set[str]] = {}  # image id -> tags to remove
    doomed: list[tuple[str, str, dict]] = []
    for combination, entries in sorted(by_combination.items()):
        if combination == "untagged":
            doomed += [(combination, ref, image) for _, ref, image in entries]
            continue
        entries.sort(key=lambda e: (e[0], e[1]), reverse=True)
        doomed += [(combination, ref, image) for _, ref, image in entries[keep:]]
    for combination, ref, image in doomed:
        if image["Id"] in used:
            plan.kept.append(KeptImage(ref, image["Id"], f"used by {used[image['Id']]}"))
            continue
        removing.setdefault(image["Id"], set()).add(ref)
        plan.removals.append(
            ImageRemoval(ref, image["Id"], combination, int(image.get("Created") or 0), 0)
        )
    # An image is freed when every name it has is removed; count its own bytes once.
    counted: set[str] = set()
    images = {i["Id"]: i for i in df.get("Images") or [] if isinstance(i, dict) and "Id" in i}
    for n, removal in enumerate(plan.removals):
        image = images[removal.image_id]
        names = {t for t in image.get("RepoTags") or [] if t != "<none>:<none>"} or {removal.ref}
        if removal.image_id in counted or not names <= removing[removal.image_id]:
            continue
        counted.add(removal.image_id)
        shared = image.get("SharedSize")
        own = int(image.get("Size") or 0) - (
            int(shared) if isinstance(shared, int) and shared > 0 else 0
        )
        plan.removals[n] = ImageRemoval(
            removal.ref, removal.image_id, removal.combination, removal.created, max(0, own)
        )
    cache = [c for c in df.get("BuildCache") or [] if isinstance(c, dict)]
    plan.cache_bytes = sum(int(c.get("Size") or 0) for c in cache)
    plan.cache_reclaimable_bytes = sum(int(c.get("Size") or 0) for c in cache if not c.get("InUse"))
    return plan


def apply_engine_prune(engine: Engine, plan: EnginePrunePlan) -> EnginePruneResult:
    """Remove the plan's tags and untagged images, then prune build cache past the limit.

    An image that a container started using since the plan was made is refused by the engine
    (conflict) and reported as failed, never forced.
    """
    before = int(_df(engine).get("LayersSize") or 0)
    removed, failed = [], []
    for removal in plan.removals:
        target = removal.image_id if removal.combination == "untagged" else removal.ref
        try:
            engine.client.images.remove(target, force=False, noprune=False)
            removed.append(removal.ref)
        except (ImageNotFound, NotFound):
            removed.append(removal.ref)  # gone already
        except (APIError, DockerException, requests.RequestException) as exc:
            failed.append(f"{removal.ref}: {str(exc)[:200]}")
    reclaimed = 0
    if plan.cache_bytes > plan.cache_limit_bytes:
        try:
            answer = engine.client.api.prune_builds(keep_storage=plan.cache_limit_bytes, all=True)
        except (APIError, DockerException, requests.RequestException) as exc:
            failed.append(f"build cache: {str(exc)[:200]}")
        else:
            reclaimed = int((answer or {}).get("SpaceReclaimed") or 0)
    after = int(_df(engine).get("LayersSize") or 0)
    return EnginePruneResult(removed, failed, before, after, reclaimed)
