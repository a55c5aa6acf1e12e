"""What the build sensors share: one preamble (the sensor over the build jobs, its cursor, the
validated store), and turning plan items into run requests and data-version observations."""

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from factory.errors import FactoryError, StoreError
from factory.plan.decisions import PlanItem, RecordIndex, plan_store
from factory.plan.ticks import Cursor, sensor_interval_s
from factory.platforms import platform as lookup_platform
from factory.store.load import LoadedStore
from factory_assets.inputs import inputs_key
from factory_assets.jobs import BUILD_JOBS, build_job_name, run_tags
from resources import DockerBuilder, ManifestStore, RecordStore

TickResult = dg.SensorResult | dg.SkipReason


@dataclass
class BuildTick:
    """One tick of a build sensor: its context and cursor, the store as validated this tick, and
    the resources that plan it."""

    context: dg.SensorEvaluationContext
    cursor: Cursor
    store: LoadedStore
    record_store: RecordStore
    docker_builder: DockerBuilder

    def runnable_items(self, digests: dict[tuple[str, str], str]) -> list[PlanItem]:
        return runnable_items(self.store, digests, self.record_store, self.docker_builder)


def build_sensor(
    unchanged_when_invalid: str,
) -> Callable[[Callable[[BuildTick], TickResult]], dg.SensorDefinition]:
    """A sensor over the build jobs, on by default, every FACTORY_SENSOR_INTERVAL_S, named after
    the function it decorates and described by its docstring (as the UI shows it).

    Each tick validates the manifest store first: a store that does not validate is a skip with
    its problems (`unchanged_when_invalid` says what the sensor therefore left alone), and
    `evaluate` never sees it.
    """

    def define(evaluate: Callable[[BuildTick], TickResult]) -> dg.SensorDefinition:
        @dg.sensor(
            name=evaluate.__name__,
            jobs=BUILD_JOBS,
            minimum_interval_seconds=sensor_interval_s(),
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=" ".join((evaluate.__doc__ or "").split()),
        )
        def sensor(
            context: dg.SensorEvaluationContext,
            manifest_store: ManifestStore,
            record_store: RecordStore,
            docker_builder: DockerBuilder,
        ) -> TickResult:
            cursor = Cursor.parse(context.cursor)
            try:
                store = manifest_store.load()
            except StoreError as exc:
                return dg.SkipReason(f"manifest store is invalid; {unchanged_when_invalid}. {exc}")
            return evaluate(BuildTick(context, cursor, store, record_store, docker_builder))

        return sensor

    return define


def runnable_items(
    store: LoadedStore,
    digests: dict[tuple[str, str], str],
    record_store: RecordStore,
    docker_builder: DockerBuilder,
) -> list[PlanItem]:
    """The plan's `run` items, high priority first, in a stable order (so slices resume well)."""
    try:
        gpu = docker_builder.gpu_available()
    except FactoryError:
        gpu = False  # an engine that does not answer has no GPU runtime we could use
    records = RecordIndex.from_index(record_store.open().index)
    _, items = plan_store(store, records, gpu_available=gpu, base_digests=digests)
    return sorted((i for i in items if i.action == "run"), key=PlanItem.queue_order)


def run_request(item: PlanItem) -> dg.RunRequest:
    """One run of the platform's build job for one manifest; the record key dedupes it.

    A failed combination whose backoff is over is the same record key again: its run key adds the
    number of failed attempts, so each retry is one run and not a duplicate of the first.
    """
    retry = f":retry-{item.failures}" if "last_failed" in item.reasons else ""
    return dg.RunRequest(
        run_key=item.record_key + retry,
        job_name=build_job_name(lookup_platform(item.platform).slug),
        partition_key=item.manifest_id,
        tags=run_tags(item),
    )


def observation(item: PlanItem) -> dg.AssetObservation:
    """The combination's current inputs as a data version: a change shows it stale in the UI."""
    return dg.AssetObservation(
        asset_key=inputs_key(lookup_platform(item.platform)),
        partition=item.manifest_id,
        tags={"dagster/data_version": item.record_key},
        metadata={"build_key": item.build_key, "reasons": ",".join(item.reasons)},
    )


def requested(batch: list[PlanItem], cursor: Cursor, **result: object) -> dg.SensorResult:
    """A tick's answer: a run request and a data-version observation for each item of the batch,
    and the cursor to resume from (plus whatever else the sensor returns, e.g. partitions)."""
    return dg.SensorResult(
        run_requests=[run_request(i) for i in batch],
        asset_events=[observation(i) for i in batch],
        cursor=cursor.dump(),
        **result,
    )
