"""Sensor tick and planning time at 1,000 and 10,000 manifests (needs `factory services up`).

    .venv/bin/python -m bench.sensor_ticks [--sizes 1000,10000]

For each size: a synthetic store, a fresh SQLite Dagster instance and record store; the first tick
(partitions added, the first capped slice of run requests); pass records for every combination (as
if every run had finished); then the figures: a full plan, a no-op tick (store unchanged), and a
tick after one fragment changed. Target: the no-op tick under 1 s at 10,000 manifests.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import dagster as dg

from bench.synthetic import write_synthetic_store
from factory.plan.decisions import RecordIndex, plan, resolve_base_digests
from factory.records.model import CompatibilityRecord, utc_now
from factory.records.store import LocalRecordStore
from factory.store.load import load_store
from resources import DockerBuilder, ManifestStore, RecordStore
from sensors import manifest_change_sensor


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def tick(instance, resources, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = manifest_change_sensor(context)
    if isinstance(result, dg.SensorResult):
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        return result, result.cursor
    return result, cursor


def record_all_passed(store_path: Path, data: Path) -> int:
    store = load_store(store_path)
    digests = resolve_base_digests(store, store.combinations())
    records = LocalRecordStore(data)
    count = 0
    now = utc_now()
    for item in plan(store, digests, RecordIndex(), gpu_available=False):
        if item.action != "run":
            continue
        records.write_record(
            CompatibilityRecord(
                build_id=f"bench-{count:06d}",
                manifest_id=item.manifest_id,
                platform=item.platform,
                pool=item.pool,
                status="pass",
                build_key=item.build_key,
                record_key=item.record_key,
                inputs={},
                started_at=now,
                finished_at=now,
            )
        )
        count += 1
    return count


def run_size(size: int, work: Path) -> dict:
    store_path = write_synthetic_store(work / f"store-{size}", size)
    data = work / f"data-{size}"
    resources = {
        "manifest_store": ManifestStore(path=str(store_path)),
        "record_store": RecordStore(data_dir=str(data)),
        "docker_builder": DockerBuilder(),
    }
    figures: dict = {"manifests": size}
    home = work / f"dagster-{size}"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        (result, cursor), figures["first_tick_s"] = timed(lambda: tick(instance, resources, None))
        figures["first_tick_requests"] = len(result.run_requests or [])
        figures["records"], figures["write_records_s"] = timed(
            lambda: record_all_passed(store_path, data)
        )

        def full_plan():
            store = load_store(store_path)
            digests = resolve_base_digests(store, store.combinations())
            index = RecordIndex.from_records(LocalRecordStore(data).records())
            return plan(store, digests, index, gpu_available=False)

        items, figures["plan_s"] = timed(full_plan)
        figures["combinations"] = len(items)
        # Drain the first store's remaining slices, as later ticks would.
        while json.loads(cursor).get("batch"):
            _, cursor = tick(instance, resources, cursor)
        (noop, cursor), figures["noop_tick_s"] = timed(lambda: tick(instance, resources, cursor))
        figures["noop_result"] = type(noop).__name__
        figures["cursor_bytes"] = len(cursor)

        (store_path.parent / "modules/httpd/0.1.0.Dockerfile").write_text("EXPOSE 8081\n")
        (changed, cursor), figures["changed_tick_s"] = timed(
            lambda: tick(instance, resources, cursor)
        )
        figures["changed_tick_requests"] = len(changed.run_requests or [])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="factory-bench-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            figures = run_size(size, Path(tmp))
            print(json.dumps(figures))
            print(
                f"{size:>6} manifests: plan {figures['plan_s']:.2f}s, no-op tick "
                f"{figures['noop_tick_s']:.3f}s, changed-fragment tick "
                f"{figures['changed_tick_s']:.2f}s ({figures['changed_tick_requests']} "
                f"requests), cursor {figures['cursor_bytes']} bytes",
                flush=True,
            )


if __name__ == "__main__":
    main()
