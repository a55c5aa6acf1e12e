"""Load: N combinations through the real daemon, webserver and Docker Engine; figures printed.

    .venv/bin/python -m bench.load [--combinations 200] [--arm64-every 10] [--json PATH] [--keep]

Why: a factory that queues hundreds of runs must finish every one of them and leave exactly one
record per combination, and its long-lived processes must not grow without bound. Most images
here are identical up to their labels, so BuildKit serves every layer from cache after the first:
the figures measure orchestration (queueing, launching run and step processes, event storage),
not compilers.

What it does, on a throw-away workdir (removed unless --keep):
1. a synthetic store of N combinations (`bench.synthetic`; every `--arm64-every`th manifest also
   lists linux/arm64, so two pools queue side by side), a data dir, and a DAGSTER_HOME prepared
   like the project's start-up does (the repo's dagster.yaml, pool limits), its dynamic
   partitions added;
2. `dagster-webserver` and `dagster-daemon run -w workspace.yaml` as subprocesses with
   FACTORY_MANIFEST_STORE, FACTORY_DATA_DIR, DAGSTER_HOME, DOCKER_HOST and FACTORY_REGISTRY; the
   invalidation sensors are stopped first (they would request the same runs again; the
   dead-letter sensor, if the code location has it, keeps running);
3. one partition backfill per platform through GraphQL (`launchPartitionBackfill`), as a user
   would launch "backfill all" from the UI; the daemon submits the runs to the queued coordinator;
4. waits until every run has ended (and any run retry too), sampling from /proc the resident
   memory of the daemon and the webserver, alone and with their children (code servers, run
   workers, step processes);
5. prints the figures and checks the records; stops the two processes it started, by PID.

Exit status 0 only when every run succeeded and every combination has exactly one record.
"""

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.dagster_ui import LOCATION, REPOSITORY, DagsterUi
from bench.synthetic import write_synthetic_store
from factory.platforms import BY_NAME
from factory.records import dlq
from factory.registry.client import RegistryClient
from factory.services import embedded as services
from factory.settings import Settings

KEEP_SENSORS = frozenset({"dead_letter_sensor"})
POLL_S = 2.0
SAMPLE_S = 0.5
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message }
} }
"""


@dataclass
class Figures:
    """What one load run measured; printed, and written as JSON with --json."""

    combinations: int
    by_platform: dict[str, int]
    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    unfinished: int = 0
    records: int = 0
    lost: int = 0
    duplicated: int = 0
    records_from_other_runs: int = 0
    dead_letters: int = 0
    record_statuses: dict[str, int] = field(default_factory=dict)
    # Failed runs that left neither a record nor a dead letter: work nobody would hear of. The
    # sensor ticks every ~30 s, so a failure in the last seconds may not be lettered yet.
    failed_without_trace: int = 0
    startup_s: float = 0.0
    total_s: float = 0.0
    runs_per_minute: float = 0.0
    run_s_p50: float = 0.0
    run_s_p95: float = 0.0
    queued_s_p50: float = 0.0
    queued_s_max: float = 0.0
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    peak_processes: dict[str, int] = field(default_factory=dict)
    host_load_avg: float = 0.0  # mean 1-minute load average: other work on the host slows runs
    executor: str = "multiprocess"
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return (
            not self.timed_out
            and self.succeeded == self.combinations
            and self.failed == self.unfinished == 0
            and self.records == self.combinations
            and self.lost == self.duplicated == self.records_from_other_runs == 0
        )


# ---------------------------------------------------------------------------------------------
# /proc sampling: resident memory of a process, and of it with all its descendants


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, resident bytes) for every process we can read."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue  # it ended while we looked
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(name)] = (int(fields[1]), int(fields[21]) * PAGE_BYTES)
    return table


def _peak_hwm(pid: int) -> int:
    """The kernel's own high-water mark of the process's resident memory (VmHWM), in bytes."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Samples, every SAMPLE_S, each watched process's RSS and its process tree's summed RSS."""

    def __init__(self, watched: dict[str, int]):
        super().__init__(daemon=True)
        self.watched = watched
        self.peak: dict[str, int] = Counter()
        self.peak_processes: dict[str, int] = Counter()
        self.load_samples: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_S):
            self.sample()

    def sample(self) -> None:
        with open("/proc/loadavg") as fh:
            self.load_samples.append(float(fh.read().split()[0]))
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        for name, root in self.watched.items():
            if root not in table:
                continue
            tree, todo = [], [root]
            while todo:
                pid = todo.pop()
                tree.append(pid)
                todo.extend(children.get(pid, []))
            self.peak[name] = max(self.peak[name], table[root][1], _peak_hwm(root))
            tree_rss = sum(table[p][1] for p in tree)
            self.peak[f"{name}_tree"] = max(self.peak[f"{name}_tree"], tree_rss)
            self.peak_processes[f"{name}_tree"] = max(
                self.peak_processes[f"{name}_tree"], len(tree)
            )

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        with contextlib.suppress(Exception):
            self.sample()


def backfill(ui: DagsterUi, slug: str, partitions: list[str], tag: str, *, in_process: bool) -> str:
    """Launch one partition backfill of `slug`'s job, as "backfill all" in the UI would."""
    params: dict = {
        "selector": {
            "partitionSetName": f"build_{slug}_partition_set",
            "repositorySelector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
            },
        },
        "partitionNames": partitions,
        "tags": [{"key": "factory/bench", "value": tag}],
        "title": f"bench.load {slug}",
    }
    if in_process:
        # The jobs' executor runs each step in its own process unless the run asks otherwise.
        params["runConfigData"] = {"execution": {"config": {"in_process": {}}}}
    result = ui.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        msg = f"backfill of {slug} refused: {result}"
        raise RuntimeError(msg)
    return result["backfillId"]


# ---------------------------------------------------------------------------------------------
# the load


def synthetic_combinations(folder: Path, combinations: int, arm64_every: int) -> Path:
    """A store with exactly `combinations` manifest x platform pairs that run on this host."""
    manifests, count = 0, 0
    platforms: list[list[str]] = []
    while count < combinations:
        listed = ["linux/amd64"]
        if arm64_every and manifests % arm64_every == arm64_every - 1 and count + 2 <= combinations:
            listed.append("linux/arm64")
        platforms.append(listed)
        count += len(listed)
        manifests += 1
    path = write_synthetic_store(folder, manifests)
    data = json.loads(path.read_text())
    for entry, listed in zip(data["manifests"].values(), platforms, strict=True):
        entry["platforms"] = listed
        entry["priority"] = "normal"
    path.write_text(json.dumps(data, indent=1))
    return path


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_load(args: argparse.Namespace, workdir: Path) -> Figures:
    import dagster as dg

    from factory.records.store import LocalRecordStore
    from factory.store.load import load_store
    from factory_assets.instance import prepare_dagster_home, sync_partitions

    current = Settings.from_env()
    docker_host = services.docker_host(current)  # a clear ServiceError when no engine answers
    RegistryClient(current.registry).ping()

    store_path = synthetic_combinations(workdir / "store", args.combinations, args.arm64_every)
    data_dir, home, logs = workdir / "data", workdir / "dagster_home", workdir / "logs"
    logs.mkdir(parents=True)
    env = {
        "FACTORY_MANIFEST_STORE": str(store_path),
        "FACTORY_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(home),
        "DOCKER_HOST": docker_host,
        "FACTORY_REGISTRY": current.registry,
    }
    os.environ.update(env)  # this process prepares the same instance the servers use
    settings = Settings.from_env()
    prepare_dagster_home(settings)
    store = load_store(store_path)
    combos = [(m, p.name) for m, p in store.combinations()]
    by_platform = Counter(p for _, p in combos)
    figures = Figures(
        combinations=len(combos),
        by_platform=dict(by_platform),
        executor="in_process" if args.in_process else "multiprocess",
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        sync_partitions(instance, store)

    started = time.monotonic()
    # The servers get the timeout a loaded host needs to answer GraphQL.
    server = DagsterUi(logs, {**os.environ, **env}, graphql_timeout_s=60.0)
    sampler: MemorySampler | None = None
    try:
        webserver = server.spawn_webserver()
        sampler = MemorySampler({"webserver": webserver.pid})
        sampler.start()
        server.wait_for_webserver()
        stopped = server.stop_sensors(KEEP_SENSORS)
        daemon = server.spawn_daemon()
        sampler.watched["daemon"] = daemon.pid
        figures.startup_s = round(time.monotonic() - started, 1)
        print(
            f"webserver {server.url} (pid {webserver.pid}), daemon pid {daemon.pid}, "
            f"started in {figures.startup_s}s; stopped sensors: {', '.join(stopped) or 'none'}"
        )

        tag = f"load-{os.getpid()}-{int(time.time())}"
        submitted = time.monotonic()
        for name in sorted(by_platform):
            slug = BY_NAME[name].slug
            keys = sorted(m for m, p in combos if p == name)
            backfill_id = backfill(server, slug, keys, tag, in_process=args.in_process)
            print(f"backfill {backfill_id}: {len(keys)} runs of build_{slug}")
        deadline = submitted + args.timeout
        runs_filter = dg.RunsFilter(tags={"factory/bench": tag})
        finished = {
            dg.DagsterRunStatus.SUCCESS,
            dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED,
        }
        with dg.DagsterInstance.from_config(str(home)) as instance:
            last_line = ""
            while True:
                for proc in server.procs:
                    if proc.poll() is not None:
                        msg = f"{proc.args[0]} exited ({proc.returncode}):\n{server.log_tail()}"
                        raise RuntimeError(msg)
                runs = instance.get_runs(filters=runs_filter)
                status = Counter(r.status.value for r in runs)
                done = [r for r in runs if r.status in finished]
                waiting = any(r.is_complete_and_waiting_to_retry for r in runs)
                line = ", ".join(f"{k.lower()} {v}" for k, v in sorted(status.items()))
                if line != last_line:
                    print(f"  {time.monotonic() - submitted:7.1f}s  {line}", flush=True)
                    last_line = line
                if len(done) >= len(combos) and len(done) == len(runs) and not waiting:
                    break
                if time.monotonic() > deadline:
                    figures.timed_out = True
                    break
                time.sleep(POLL_S)
            figures.total_s = round(time.monotonic() - submitted, 1)
            run_records = instance.get_run_records(filters=runs_filter)
            records = {r.dagster_run.run_id: r for r in run_records}
    finally:
        if sampler is not None:
            sampler.stop()
        server.stop()

    runs_by_id = {run_id: r.dagster_run for run_id, r in records.items()}
    figures.runs = len(runs_by_id)
    figures.succeeded = sum(1 for r in runs_by_id.values() if r.is_success)
    figures.failed = sum(1 for r in runs_by_id.values() if r.is_failure)
    figures.unfinished = figures.runs - figures.succeeded - figures.failed
    durations = [r.end_time - r.start_time for r in records.values() if r.start_time and r.end_time]
    waits = [
        r.start_time - r.create_timestamp.timestamp() for r in records.values() if r.start_time
    ]
    figures.run_s_p50 = round(statistics.median(durations), 1) if durations else 0.0
    figures.run_s_p95 = round(_percentile(durations, 0.95), 1)
    figures.queued_s_p50 = round(statistics.median(waits), 1) if waits else 0.0
    figures.queued_s_max = round(max(waits, default=0.0), 1)
    if figures.total_s:
        figures.runs_per_minute = round(figures.succeeded / figures.total_s * 60, 1)

    record_store = LocalRecordStore(data_dir)
    written = list(record_store.records())
    per_combo = Counter((r.manifest_id, r.platform) for r in written)
    figures.records = len(written)
    figures.lost = sum(1 for c in combos if per_combo[c] == 0)
    figures.duplicated = sum(1 for c in combos if per_combo[c] > 1)
    figures.records_from_other_runs = sum(1 for r in written if r.dagster.run_id not in runs_by_id)
    letters = [dlq.read(record_store, key) for key in dlq.letter_keys(record_store)]
    figures.dead_letters = len(letters)
    figures.record_statuses = dict(Counter(r.status for r in written))
    traced = {r.dagster.run_id for r in written} | {letter.run_id for letter in letters}
    figures.failed_without_trace = sum(
        1 for run_id, run in runs_by_id.items() if run.is_failure and run_id not in traced
    )
    assert sampler is not None
    figures.peak_rss_mb = {k: round(v / 2**20, 1) for k, v in sorted(sampler.peak.items())}
    figures.peak_processes = dict(sampler.peak_processes)
    if sampler.load_samples:
        figures.host_load_avg = round(statistics.mean(sampler.load_samples), 2)
    return figures


def report(figures: Figures) -> None:
    print()
    platforms = ", ".join(f"{n} {p}" for p, n in sorted(figures.by_platform.items()))
    print(f"combinations      {figures.combinations} ({platforms}), {figures.executor} executor")
    print(f"total time        {figures.total_s}s from submission to the last run's end")
    print(f"                  (+{figures.startup_s}s to start the webserver and the daemon)")
    print(
        f"runs              {figures.runs}: {figures.succeeded} succeeded, {figures.failed} "
        f"failed, {figures.unfinished} unfinished{' (TIMED OUT)' if figures.timed_out else ''}"
    )
    print(f"throughput        {figures.runs_per_minute} runs/min")
    print(f"run time          p50 {figures.run_s_p50}s, p95 {figures.run_s_p95}s")
    print(f"queued            p50 {figures.queued_s_p50}s, max {figures.queued_s_max}s")
    print(
        f"records           {figures.records} (lost {figures.lost}, duplicated "
        f"{figures.duplicated}, from other runs {figures.records_from_other_runs}); "
        f"dead letters {figures.dead_letters}"
    )
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(figures.record_statuses.items()))
    print(
        f"                  by status: {statuses or 'none'}; failed runs with neither record "
        f"nor dead letter: {figures.failed_without_trace}"
    )
    for name in ("daemon", "webserver"):
        print(
            f"peak RSS {name:9} {figures.peak_rss_mb.get(name, 0)} MB alone, "
            f"{figures.peak_rss_mb.get(f'{name}_tree', 0)} MB with children "
            f"(up to {figures.peak_processes.get(f'{name}_tree', 0)} processes)"
        )
    print(
        f"host load         {figures.host_load_avg} "
        f"(mean 1-minute load average; {os.cpu_count()} cores)"
    )
    print("OK" if figures.ok else "NOT OK: see the counts above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--combinations", type=int, default=200, help="manifest x platform runs")
    parser.add_argument(
        "--arm64-every",
        type=int,
        default=10,
        help="every Nth manifest also lists linux/arm64 (0: amd64 only)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run each run's steps in its run worker (default: a process per step, as deployed)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds for all runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (logs, instance)")
    args = parser.parse_args(argv)
    if args.combinations < 1:
        parser.error("--combinations must be at least 1")
    if args.timeout is None:
        args.timeout = 300 + 20 * args.combinations
    workdir = Path(tempfile.mkdtemp(prefix="factory-load-"))
    try:
        figures = run_load(args, workdir)
    except Exception as exc:
        print(f"load run failed: {exc}\nworkdir kept: {workdir}", file=sys.stderr)
        return 2
    report(figures)
    if args.json:
        args.json.write_text(json.dumps({**asdict(figures), "ok": figures.ok}, indent=2) + "\n")
    if args.keep or not figures.ok:
        print(f"workdir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if figures.ok else 1


if __name__ == "__main__":
    sys.exit(main())
