"""Watch the manifest store: keep partitions in step and request runs for what the plan says."""

import dagster as dg

from factory.errors import FactoryError, StoreError
from factory.plan.decisions import resolve_base_digests
from factory.plan.ticks import Cursor, max_run_requests, next_slice, sensor_interval_s
from factory_assets.instance import partition_requests
from factory_assets.jobs import BUILD_JOBS
from resources import DockerBuilder, ManifestStore, RecordStore
from sensors.common import observation, run_request, runnable_items


@dg.sensor(
    name="manifest_change_sensor",
    jobs=BUILD_JOBS,
    minimum_interval_seconds=sensor_interval_s(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Validates the manifest store each tick, syncs the per-platform partitions and "
    "requests runs for combinations whose keys changed (run_key = record key).",
)
def manifest_change_sensor(
    context: dg.SensorEvaluationContext,
    manifest_store: ManifestStore,
    record_store: RecordStore,
    docker_builder: DockerBuilder,
) -> dg.SensorResult | dg.SkipReason:
    cursor = Cursor.parse(context.cursor)
    try:
        store = manifest_store.load()
    except StoreError as exc:
        # Nothing is removed or requested from a store that does not validate.
        return dg.SkipReason(f"manifest store is invalid; nothing changed. {exc}")
    partitions = partition_requests(context.instance, store)
    if store.sha256 == cursor.seen and not cursor.batch and not partitions:
        return dg.SkipReason(f"manifest store unchanged ({store.sha256[:12]})")
    try:
        digests = resolve_base_digests(store, store.combinations())
        items = runnable_items(store, digests, record_store, docker_builder)
    except FactoryError as exc:
        # Partitions still follow the store; the run requests wait for the next tick.
        return dg.SensorResult(
            skip_reason=f"cannot plan: {exc}; retrying next tick",
            dynamic_partitions_requests=partitions,
            cursor=cursor.dump(),
        )
    batch, new_cursor = next_slice(items, store.sha256, cursor, max_run_requests())
    if batch:
        context.log.info(f"requesting {len(batch)} of {len(items)} runs")
    return dg.SensorResult(
        run_requests=[run_request(i) for i in batch],
        dynamic_partitions_requests=partitions,
        asset_events=[observation(i) for i in batch],
        cursor=new_cursor.dump(),
    )
