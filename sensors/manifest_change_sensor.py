"""Watch the manifest store: keep partitions in step and request runs for what the plan says."""

import dagster as dg

from factory.errors import FactoryError
from factory.plan.decisions import resolve_base_digests
from factory.plan.ticks import max_run_requests, next_slice
from factory_assets.instance import partition_requests
from sensors.common import BuildTick, TickResult, build_sensor, requested


# Nothing is removed or requested from a store that does not validate.
@build_sensor(unchanged_when_invalid="nothing changed")
def manifest_change_sensor(tick: BuildTick) -> TickResult:
    """Validates the manifest store each tick, syncs the per-platform partitions and requests
    runs for combinations whose keys changed (run_key = record key)."""
    store, cursor = tick.store, tick.cursor
    partitions = partition_requests(tick.context.instance, store)
    if store.sha256 == cursor.seen and not cursor.batch and not partitions:
        return dg.SkipReason(f"manifest store unchanged ({store.sha256[:12]})")
    try:
        items = tick.runnable_items(resolve_base_digests(store, store.combinations()))
    except FactoryError as exc:
        # Partitions still follow the store; the run requests wait for the next tick.
        return dg.SensorResult(
            skip_reason=f"cannot plan: {exc}; retrying next tick",
            dynamic_partitions_requests=partitions,
            cursor=cursor.dump(),
        )
    batch, new_cursor = next_slice(items, store.sha256, cursor, max_run_requests())
    if batch:
        tick.context.log.info(f"requesting {len(batch)} of {len(items)} runs")
    return requested(batch, new_cursor, dynamic_partitions_requests=partitions)
