"""Watch the base images: when one platform's digest moves, re-run exactly its combinations.

Digests are resolved per platform (not the multi-arch index digest, which changes whenever any
architecture is pushed), so an arm64 refresh never rebuilds amd64.
"""

import dagster as dg

from factory.errors import FactoryError
from factory.plan.decisions import resolve_base_digests
from factory.plan.ticks import fingerprint, max_run_requests, next_slice
from factory.platforms import platform as lookup_platform
from factory.store.load import LoadedStore
from sensors.common import BuildTick, TickResult, build_sensor, requested


def _pair(base: str, oci_platform: str) -> str:
    return f"{base}|{oci_platform}"


def _base_names(store: LoadedStore) -> str:
    return ", ".join(f"{b.image}:{b.tag}" for b in store.model.bases.values())


@build_sensor(unchanged_when_invalid="nothing requested")
def base_digest_sensor(tick: BuildTick) -> TickResult:
    """Resolves each base image's per-platform digest; when one moves, requests runs for exactly
    the combinations on that base and platform."""
    store, cursor = tick.store, tick.cursor
    try:
        resolved = resolve_base_digests(store, store.combinations())
    except FactoryError as exc:
        return dg.SkipReason(
            f"cannot resolve base digests of {_base_names(store)}: {exc}; retrying next tick"
        )
    current = {_pair(b, p): d for (b, p), d in resolved.items()}
    if not cursor.digests:
        cursor.digests = current
        cursor.seen = fingerprint(current)
        return dg.SensorResult(
            skip_reason=f"recorded {len(current)} base digests", cursor=cursor.dump()
        )
    moved = {k for k, d in current.items() if k in cursor.digests and cursor.digests[k] != d}
    state = fingerprint(current)
    if not moved and not cursor.batch:
        cursor.digests = current  # bases added or dropped: the manifest sensor handles those
        cursor.seen = state
        return dg.SensorResult(skip_reason="no base digest moved", cursor=cursor.dump())
    try:
        items = [
            i
            for i in tick.runnable_items(resolved)
            if _pair(store.manifest(i.manifest_id).base, oci_platform(i.platform)) in moved
        ]
    except FactoryError as exc:
        return dg.SkipReason(f"cannot plan: {exc}; retrying next tick")
    batch, new_cursor = next_slice(items, state, cursor, max_run_requests())
    if not new_cursor.batch:
        new_cursor.digests = current  # every run for the moved digests has been requested
    tick.context.log.info(f"base digests moved: {sorted(moved)}; requesting {len(batch)} runs")
    return requested(batch, new_cursor)


def oci_platform(platform_name: str) -> str:
    return lookup_platform(platform_name).oci_platform
