"""What to run and why: one decision per manifest x platform, shared by the CLI and the sensors.

For each combination the plan computes the current `build_key` and `record_key` from the store and
the base's per-platform digest, compares them with the newest record, and says whether to run, why,
and whether a new image is needed (`rebuild`) or only a re-test of the existing one. A newest record
that failed for the current keys is a result: it is tried again only after its backoff
(`failed_backoff` until then, factory/plan/backoff.py), unless `retry_failed` or `force` says now.
"""

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from factory.plan.backoff import Backoff
from factory.platforms import Platform
from factory.records.model import CompatibilityRecord
from factory.registry.client import RegistryClient
from factory.registry.names import split_image
from factory.report.metrics import parse_time
from factory.store.keys import CombinationInputs, build_key, combination_inputs, record_key
from factory.store.load import LoadedStore

REASONS = (
    "new",
    "base_changed",
    "template_changed",
    "fragment_changed",
    "tests_changed",
    "manifest_changed",
    "last_failed",
    "failed_backoff",
    "forced",
    "up_to_date",
    "no_executor",
)


@dataclass(frozen=True)
class PlanItem:
    manifest_id: str
    platform: str
    pool: str
    action: str  # run | skip
    rebuild: bool
    reasons: list[str]
    build_key: str
    record_key: str
    priority: str
    last_status: str | None = None
    last_build_id: str | None = None
    # For a combination whose current keys failed: failed attempts so far, and when the next one
    # is due (UTC ISO 8601); see factory/plan/backoff.py.
    failures: int = 0
    retry_at: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def queue_order(self) -> tuple[bool, str, str]:
        """The order runs are started in: high priority first, then manifest and platform."""
        return (self.priority != "high", self.manifest_id, self.platform)


@dataclass
class RecordIndex:
    """What the records say: the newest record per combination, and built images.

    Made in one pass over records (`from_records`), or from the records index (`from_index`),
    which answers "was this build key built?" only for the keys a plan asks about.
    """

    latest: dict[tuple[str, str], CompatibilityRecord] = field(default_factory=dict)
    built_keys: set[str] = field(default_factory=set)
    lookup_built: Callable[[Iterable[str]], set[str]] | None = None
    # (manifest, platform) -> failed attempts of its newest record's record key, for failing ones.
    failures: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def from_index(cls, records_index) -> "RecordIndex":
        """From a `factory.records.index.RecordsIndex`: reads as many rows as combinations."""
        latest = records_index.latest()
        return cls(
            latest=latest,
            lookup_built=records_index.built_keys,
            failures=records_index.failure_counts(
                [r for r in latest.values() if r.status != "pass"]
            ),
        )

    def learn_built(self, build_keys: Iterable[str]) -> None:
        """Ask the index about these build keys (a no-op for an index made from records)."""
        if self.lookup_built is not None:
            self.built_keys |= self.lookup_built(build_keys)

    @classmethod
    def from_records(cls, records: Iterable[CompatibilityRecord]) -> "RecordIndex":
        index = cls()
        failed: dict[tuple[str, str, str], int] = {}
        for record in records:
            if record.status != "pass":
                attempt = (record.manifest_id, record.platform, record.record_key)
                failed[attempt] = failed.get(attempt, 0) + 1
            key = (record.manifest_id, record.platform)
            current = index.latest.get(key)
            if current is None or (record.finished_at, record.build_id) > (
                current.finished_at,
                current.build_id,
            ):
                index.latest[key] = record
            if record.image is not None and record.image.digest:
                index.built_keys.add(record.build_key)
        for key, last in index.latest.items():
            if last.status != "pass":
                index.failures[key] = failed.get((*key, last.record_key), 1)
        return index


def resolve_base_digests(
    store: LoadedStore, combinations: list[tuple[str, Platform]]
) -> dict[tuple[str, str], str]:
    """(base id, OCI platform) -> per-platform digest: one lookup of each base's platforms (its
    index), one client (connection) per registry."""
    wanted: dict[str, set[str]] = {}
    for manifest_id, platform in combinations:
        wanted.setdefault(store.manifest(manifest_id).base, set()).add(platform.oci_platform)
    clients: dict[str, RegistryClient] = {}
    digests = {}
    for base_id, oci_platforms in sorted(wanted.items()):
        base = store.model.bases[base_id]
        address, repository = split_image(base.image)
        client = clients.setdefault(address, RegistryClient(address))
        offered = client.platforms(repository, base.tag)
        for oci_platform in sorted(oci_platforms):
            digests[(base_id, oci_platform)] = client.platform_digest(
                repository, base.tag, oci_platform, offered=offered
            )
    return digests


def _changes(current: CombinationInputs, last: dict) -> list[str]:
    reasons = []
    if current.base["digest"] != (last.get("base") or {}).get("digest"):
        reasons.append("base_changed")
    if current.template != last.get("template"):
        reasons.append("template_changed")
    if current.fragments != last.get("fragments"):
        reasons.append("fragment_changed")
    if current.tests != last.get("test_suites"):
        reasons.append("tests_changed")
    if current.manifest_sha256 != last.get("manifest_sha256"):
        reasons.append("manifest_changed")
    # A change in Factory's own build recipe changes every key without any input changing.
    return reasons or ["manifest_changed"]


def plan(
    store: LoadedStore,
    base_digests: dict[tuple[str, str], str],
    records: RecordIndex,
    *,
    gpu_available: bool,
    force: bool = False,
    retry_failed: bool = False,
    manifest_ids: list[str] | None = None,
    platforms: list[str] | None = None,
    now: datetime | None = None,
    backoff: Backoff | None = None,
) -> list[PlanItem]:
    """Decide every selected combination; see the module docstring."""
    now = now or datetime.now(UTC)
    backoff = backoff or Backoff.from_env()
    keyed = []
    for manifest_id, platform in store.combinations(manifest_ids=manifest_ids, platforms=platforms):
        manifest = store.manifest(manifest_id)
        digest = base_digests[(manifest.base, platform.oci_platform)]
        inputs = combination_inputs(store, manifest_id, platform, digest)
        bkey = build_key(inputs)
        keyed.append((manifest_id, platform, manifest, inputs, bkey, record_key(inputs, bkey)))
    records.learn_built(k[4] for k in keyed)
    items = []
    for manifest_id, platform, manifest, inputs, bkey, rkey in keyed:
        last = records.latest.get((manifest_id, platform.name))
        rebuild = bkey not in records.built_keys
        failures, retry_at = 0, None
        if platform.gpu and not gpu_available:
            action, reasons = "skip", ["no_executor"]
        elif last is None:
            action, reasons = "run", ["new"]
        elif last.record_key != rkey:
            action, reasons = "run", _changes(inputs, last.inputs)
        elif last.status != "pass":
            failures = records.failures.get((manifest_id, platform.name), 1)
            due = backoff.retry_at(parse_time(last.finished_at), failures)
            retry_at = due.strftime("%Y-%m-%dT%H:%M:%SZ")
            if force or retry_failed or due <= now:
                action, reasons = "run", ["last_failed"]
            else:
                action, reasons = "skip", ["failed_backoff"]
        elif force:
            action, reasons = "run", ["forced"]
        else:
            action, reasons = "skip", ["up_to_date"]
        if force and action == "run" and "forced" not in reasons:
            reasons = [*reasons, "forced"]
        items.append(
            PlanItem(
                manifest_id=manifest_id,
                platform=platform.name,
                pool=platform.pool,
                action=action,
                rebuild=(rebuild or force) and action == "run",
                reasons=reasons,
                build_key=bkey,
                record_key=rkey,
                priority=manifest.priority,
                last_status=last.status if last else None,
                last_build_id=last.build_id if last else None,
                failures=failures,
                retry_at=retry_at,
            )
        )
    return items


def plan_store(
    store: LoadedStore,
    records: "Iterable[CompatibilityRecord] | RecordIndex",
    *,
    gpu_available: bool,
    force: bool = False,
    retry_failed: bool = False,
    manifest_ids: list[str] | None = None,
    platforms: list[str] | None = None,
    base_digests: dict[tuple[str, str], str] | None = None,
) -> tuple[RecordIndex, list[PlanItem]]:
    """Resolve the bases (unless given), index the records and plan: the one way every caller
    (CLI, sensors, assets) gets a plan."""
    combos = store.combinations(manifest_ids=manifest_ids, platforms=platforms)
    digests = base_digests if base_digests is not None else resolve_base_digests(store, combos)
    index = records if isinstance(records, RecordIndex) else RecordIndex.from_records(records)
    items = plan(
        store,
        digests,
        index,
        gpu_available=gpu_available,
        force=force,
        retry_failed=retry_failed,
        manifest_ids=manifest_ids,
        platforms=platforms,
    )
    return index, items
