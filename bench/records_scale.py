"""Command times against the length of the record history (needs `factory services up`).

    .venv/bin/python -m bench.records_scale            # 20,000 records
    .venv/bin/python -m bench.records_scale --large    # 20,000 and 100,000, and the ratios

For each size: a synthetic store of about 2,000 manifest x platform combinations, and a history of
N records (N / combinations builds per combination, one a day, the newest for the current keys so
the plan says up_to_date; one combination in twenty failed its newest build). The records are
written as files, as years of builds would have left them, then `factory records reindex` indexes
them (timed: the one-off migration cost). Then each command runs as a user runs it, in its own
process: `factory plan`, `factory matrix`, `factory status`, `factory gc --dry-run`, and one
manifest sensor tick that plans every combination (after a fragment change), `--rounds` times
with the sizes taking turns, so that load from elsewhere falls on both; medians are printed.

Targets: each at most 2 s at 20,000 records, and at most 1.5x that at 100,000.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.synthetic import write_synthetic_store
from factory.plan.decisions import RecordIndex, plan, resolve_base_digests
from factory.records.model import (
    CacheInfo,
    CompatibilityRecord,
    DagsterRef,
    EvidenceRef,
    ExecutorRef,
    ImageInfo,
    SuiteResult,
)
from factory.records.store import LocalRecordStore
from factory.services.embedded import docker_host
from factory.settings import PROJECT_ROOT, Settings
from factory.store.load import load_store

FACTORY = str(Path(sys.executable).parent / "factory")
# 1,143 synthetic manifests make about 2,000 combinations with bench.synthetic's platform sets.
MANIFESTS = 1143
TARGET_S = 2.0
TARGET_RATIO = 1.5
TICK = """
import sys, time
import dagster as dg
from resources import DockerBuilder, ManifestStore, RecordStore
from sensors import manifest_change_sensor
store, data, home = sys.argv[1:4]
resources = {
    "manifest_store": ManifestStore(path=store),
    "record_store": RecordStore(data_dir=data),
    "docker_builder": DockerBuilder(),
}
with dg.DagsterInstance.from_config(home) as instance:
    started = time.perf_counter()
    result = manifest_change_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    print(f"{time.perf_counter() - started:.3f}")
"""


def _hex(n: int) -> str:
    return f"{n:064x}"


def _time(finished: datetime) -> str:
    return finished.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_history(store_path: Path, data: Path, total: int) -> tuple[int, int]:
    """`total` records over the store's combinations; returns (records, combinations)."""
    store = load_store(store_path)
    digests = resolve_base_digests(store, store.combinations())
    items = [i for i in plan(store, digests, RecordIndex(), gpu_available=True)]
    per_combination = max(1, -(-total // len(items)))  # at least `total` records
    records = LocalRecordStore(data)
    now = datetime.now(UTC)
    written = 0
    for c, item in enumerate(items):
        for k in range(per_combination):
            newest = k == per_combination - 1
            finished = now - timedelta(days=per_combination - 1 - k, minutes=c % 600)
            status = "fail" if newest and c % 20 == 0 else "pass"
            build_id = f"bench-{c:05d}-{k:03d}"
            build_key = item.build_key if newest else _hex(c * 1000 + k)
            records.put_json(
                "record",
                build_id,
                CompatibilityRecord(
                    build_id=build_id,
                    manifest_id=item.manifest_id,
                    platform=item.platform,
                    pool=item.pool,
                    status=status,
                    build_key=build_key,
                    record_key=item.record_key if newest else _hex(c * 1000 + k + 500),
                    inputs={"base": {"digest": "sha256:" + "1" * 64}, "template": "service"},
                    image=ImageInfo(
                        ref=f"127.0.0.1:5000/factory/{item.manifest_id}:x-{build_key[:12]}",
                        digest="sha256:" + _hex(c * 1000 + k),
                        size_bytes=1_000_000,
                        layers=5,
                    ),
                    tests=[
                        SuiteResult(
                            suite="smoke",
                            status="pass" if status == "pass" else "fail",
                            exit_code=0 if status == "pass" else 1,
                            duration_s=0.4,
                        )
                    ],
                    cache=CacheInfo(steps=5, cached=3),
                    timings_s={"render": 0.01, "build": 1.2, "test": 0.4, "sbom": 0.1},
                    evidence={"log": EvidenceRef(uri=f"file:///x/{build_id}.log", sha256="2" * 64)},
                    started_at=_time(finished - timedelta(seconds=3)),
                    finished_at=_time(finished),
                    dagster=DagsterRef(run_id=_hex(c * 1000 + k)[:36], partition=item.manifest_id),
                    executor=ExecutorRef(
                        kind="multiprocess",
                        worker="bench",
                        pool=item.pool,
                        host="bench",
                        docker_host="unix:///bench.sock",
                    ),
                ).model_dump(mode="json"),
            )
            written += 1
    return written, len(items)


def timed(args: list[str], env: dict, **options) -> tuple[float, str]:
    """Wall time of one run of a command, and its output."""
    started = time.perf_counter()
    done = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=1800, check=False, **options
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        print(f"  {' '.join(map(str, args[1:3]))} exited {done.returncode}: {done.stderr[-500:]}")
    return seconds, done.stdout


def prepare(total: int, work: Path) -> dict:
    """The synthetic store and history for one size, indexed; its environment."""
    store_path = write_synthetic_store(work / f"store-{total}", MANIFESTS)
    data = work / f"data-{total}"
    started = time.perf_counter()
    records, combinations = write_history(store_path, data, total)
    size: dict = {
        "records": records,
        "combinations": combinations,
        "write_files_s": round(time.perf_counter() - started, 1),
        "store": store_path,
        "data": data,
        "env": {
            **os.environ,
            # The project's own engine: the bench's data dir has none.
            "DOCKER_HOST": docker_host(Settings.from_env()),
            "FACTORY_DATA_DIR": str(data),
            "DAGSTER_HOME": str(data / "dagster"),
            "FACTORY_MANIFEST_STORE": str(store_path),
            "FACTORY_RECORDS_INDEX_URL": "",
            "FACTORY_S3_BUCKET": "",
        },
    }
    seconds, _ = timed([FACTORY, "records", "reindex"], size["env"])
    size["reindex_s"] = round(seconds, 1)
    # The sensor tick then plans every combination with one fragment changed.
    (store_path.parent / "modules/httpd/0.1.0.Dockerfile").write_text("EXPOSE 8081\n")
    return size


def measure(size: dict) -> dict[str, float | None]:
    """Each command once, each in its own process."""
    env = size["env"]
    figures: dict[str, float | None] = {}
    for name, args in COMMAND_ARGS.items():
        figures[name], _ = timed([FACTORY, *args], env)
    _, out = timed(
        [
            sys.executable,
            "-c",
            TICK,
            str(size["store"]),
            str(size["data"]),
            str(size["data"] / "dagster"),
        ],
        {**env, "PYTHONPATH": str(PROJECT_ROOT)},
        cwd=PROJECT_ROOT,
    )
    lines = out.strip().splitlines()
    figures["sensor_tick_s"] = float(lines[-1]) if lines else None
    return figures


COMMANDS = ("plan_s", "matrix_s", "status_s", "gc_dry_run_s", "sensor_tick_s")
COMMAND_ARGS = {
    "plan_s": ["plan"],
    "matrix_s": ["matrix"],
    "status_s": ["status"],
    "gc_dry_run_s": ["gc", "--dry-run"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="Also 100,000 records, and ratios.")
    parser.add_argument("--records", type=int, default=20_000, help="The first size.")
    parser.add_argument("--rounds", type=int, default=3, help="Measurements per command.")
    parser.add_argument("--work", type=Path, help="Keep the stores and data here (for profiling).")
    args = parser.parse_args()
    totals = [args.records, 100_000] if args.large else [args.records]
    with tempfile.TemporaryDirectory(prefix="factory-records-scale-") as tmp:
        work = Path(tmp)
        if args.work:
            args.work.mkdir(parents=True, exist_ok=True)
            work = args.work
        sizes = [prepare(total, work) for total in totals]
        # Sizes alternate within each round, so that load on the machine falls on both alike.
        samples: list[dict[str, list[float]]] = [{} for _ in sizes]
        for _ in range(args.rounds):
            for size, sample in zip(sizes, samples, strict=True):
                for name, seconds in measure(size).items():
                    if seconds is not None:
                        sample.setdefault(name, []).append(seconds)
    results = []
    for size, sample in zip(sizes, samples, strict=True):
        figures = {k: v for k, v in size.items() if k in ("records", "combinations")}
        figures |= {"write_files_s": size["write_files_s"], "reindex_s": size["reindex_s"]}
        figures |= {n: round(statistics.median(sample[n]), 3) for n in COMMANDS if n in sample}
        results.append(figures)
        print(json.dumps(figures), flush=True)
        line = ", ".join(f"{n[:-2]} {figures[n]:.2f}s" for n in COMMANDS if n in figures)
        print(
            f"{figures['records']:>7} records ({figures['combinations']} combinations): "
            f"{line}; reindex {figures['reindex_s']:.1f}s (medians of {args.rounds})",
            flush=True,
        )
    over = [n for n in COMMANDS if results[0].get(n, 0) > TARGET_S]
    verdict = "met" if not over else "missed by " + ", ".join(over)
    print(f"target {TARGET_S:.0f}s at {results[0]['records']}: {verdict}")
    if len(results) == 2:
        ratios = {n: results[1][n] / results[0][n] for n in COMMANDS if n in results[1]}
        print(
            "ratio 100,000 / 20,000: "
            + ", ".join(f"{n[:-2]} {r:.2f}x" for n, r in ratios.items())
            + f" (target {TARGET_RATIO}x or less)"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
