"""What both sensors share: turning plan items into run requests and data-version observations."""

import dagster as dg

from factory.errors import FactoryError
from factory.plan.decisions import PlanItem, RecordIndex, plan_store
from factory.platforms import platform as lookup_platform
from factory.store.load import LoadedStore
from factory_assets.inputs import inputs_key
from factory_assets.jobs import build_job_name, run_tags
from resources import DockerBuilder, RecordStore


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
