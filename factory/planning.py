"""What to run and why: one decision per manifest x platform, shared by the CLI and the sensors.

For each combination the plan computes the current `build_key` and `record_key` from the store and
the base's per-platform digest, compares them with the newest record, and says whether to run, why,
and whether a new image is needed (`rebuild`) or only a re-test of the existing one.
"""

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from factory.keys import CombinationInputs, build_key, combination_inputs, record_key
from factory.platforms import Platform
from factory.records import CompatibilityRecord
from factory.registry import RegistryClient, split_image
from factory.store import LoadedStore

REASONS = (
    "new",
    "base_changed",
    "template_changed",
    "fragment_changed",
    "tests_changed",
    "manifest_changed",
    "last_failed",
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

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RecordIndex:
    """What the records say, in one pass: the newest record per combination, and built images."""

    latest: dict[tuple[str, str], CompatibilityRecord] = field(default_factory=dict)
    built_keys: set[str] = field(default_factory=set)

    @classmethod
    def from_records(cls, records: Iterable[CompatibilityRecord]) -> "RecordIndex":
        index = cls()
        for record in records:
            key = (record.manifest_id, record.platform)
            current = index.latest.get(key)
            if current is None or (record.finished_at, record.build_id) > (
                current.finished_at,
                current.build_id,
            ):
                index.latest[key] = record
            if record.image is not None and record.image.digest:
                index.built_keys.add(record.build_key)
        return index


def resolve_base_digests(
    store: LoadedStore, combinations: list[tuple[str, Platform]]
) -> dict[tuple[str, str], str]:
    """(base id, OCI platform) -> per-platform digest, one registry lookup per pair."""
    wanted = sorted({(store.manifest(m).base, p.oci_platform) for m, p in combinations})
    digests = {}
    for base_id, oci_platform in wanted:
        base = store.model.bases[base_id]
        address, repository = split_image(base.image)
        digests[(base_id, oci_platform)] = RegistryClient(address).platform_digest(
            repository, base.tag, oci_platform
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
    manifest_ids: list[str] | None = None,
    platforms: list[str] | None = None,
) -> list[PlanItem]:
    """Decide every selected combination; see the module docstring."""
    items = []
    for manifest_id, platform in store.combinations(manifest_ids=manifest_ids, platforms=platforms):
        manifest = store.manifest(manifest_id)
        digest = base_digests[(manifest.base, platform.oci_platform)]
        inputs = combination_inputs(store, manifest_id, platform, digest)
        bkey = build_key(inputs)
        rkey = record_key(inputs, bkey)
        last = records.latest.get((manifest_id, platform.name))
        rebuild = bkey not in records.built_keys
        if platform.gpu and not gpu_available:
            action, reasons = "skip", ["no_executor"]
        elif last is None:
            action, reasons = "run", ["new"]
        elif last.record_key != rkey:
            action, reasons = "run", _changes(inputs, last.inputs)
        elif last.status != "pass":
            action, reasons = "run", ["last_failed"]
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
            )
        )
    return items


def plan_store(
    store: LoadedStore,
    records: Iterable[CompatibilityRecord],
    *,
    gpu_available: bool,
    force: bool = False,
    manifest_ids: list[str] | None = None,
    platforms: list[str] | None = None,
    base_digests: dict[tuple[str, str], str] | None = None,
) -> tuple[RecordIndex, list[PlanItem]]:
    """Resolve the bases (unless given), index the records and plan: the one way every caller
    (CLI, sensors, assets) gets a plan."""
    combos = store.combinations(manifest_ids=manifest_ids, platforms=platforms)
    digests = base_digests if base_digests is not None else resolve_base_digests(store, combos)
    index = RecordIndex.from_records(records)
    items = plan(
        store,
        digests,
        index,
        gpu_available=gpu_available,
        force=force,
        manifest_ids=manifest_ids,
        platforms=platforms,
    )
    return index, items
