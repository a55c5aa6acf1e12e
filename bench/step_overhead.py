"""Dagster's cost per combination: one step per combination (now) against five steps (before).

    .venv/bin/python -m bench.step_overhead [--repeat 1] [--executors in_process,multiprocess]

Needs root and `factory services up`. The five-step chain (`dockerfile -> image -> test_report ->
sbom -> compatibility_record`, a `BuildState` handed on through the filesystem IO manager) is the
code at `--old-commit`: it is checked out into a temporary `git worktree` and run from there with
this venv (PYTHONPATH set to the worktree; each pass checks that `factory_assets` really came from
it), and the worktree is removed at the end. The one-step chain is this checkout.

Both shapes run against one isolated workspace (bench/isolated.py: a temporary registry holding
only the base, a copy of the example store) and one extra Docker Engine; each shape has its own
data dir and SQLite Dagster instance (the project's dagster.yaml). A warm-up pass per shape builds
and pushes every image, so the measured passes do the same work in both shapes: each combination
reuses its image, runs its test suites, makes its SBOM and writes its record (`legacy_agent` on
arm64 fails its test on purpose, in both).

Each measured pass is one process that runs each combination as one Dagster run with
`dagster.execute_job` (a reconstructable job, as the daemon launches it), with the `in_process`
executor (`factory run`'s and a run pod's way) or the `multiprocess` one (the default of runs
launched from the UI: one process per step). Per run it reports the wall time, the event log
entries Dagster wrote (all of them, and by type), the steps, the overhead (wall time minus the
work the record itself timed: render + build + test + sbom; what is left is Dagster plus writing
evidence, provenance and the record), and the part of it outside every step (from the event log's
STEP_START to STEP_SUCCESS/STEP_FAILURE times: run start and end, plan, resources, and under the
multiprocess executor each step process starting).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.isolated import HostClock, workspace
from factory.services.extra_engine import extra_engine
from factory.settings import PROJECT_ROOT
from factory.store.load import load_store

OLD_COMMIT = "15eb269"
SHAPES = ("five_steps", "one_step")
EXECUTORS = ("in_process", "multiprocess")
PASS_TIMEOUT_S = 1800
RECORD_TIMINGS = ("render", "build", "test", "sbom")

# One pass: runs every combination as one Dagster run, in the code at PYTHONPATH; prints JSON.
PASS_CODE = r"""
import json, sys, time
from collections import Counter

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

import factory_assets
from factory.settings import Settings
from factory.store.load import load_store
from factory_assets.instance import sync_partitions
from factory_assets.jobs import build_job_name

code_root, executor, combinations = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
repository = ReconstructableRepository.for_module(
    "factory_assets.definitions", "defs", working_directory=code_root
)
settings = Settings.from_env()
runs = []
with dg.DagsterInstance.get() as instance:
    sync_partitions(instance, load_store(settings.manifest_store))
    for manifest_id, slug in combinations:
        recon = repository.get_reconstructable_job(build_job_name(slug))
        tags = recon.get_definition().get_tags_for_partition_key(
            manifest_id, selected_asset_keys=None
        )
        started = time.perf_counter()
        with dg.execute_job(
            recon,
            instance,
            run_config={"execution": {"config": {executor: {}}}},
            tags=tags,
            raise_on_error=False,
        ) as result:
            wall = time.perf_counter() - started
            run_id, success = result.run_id, result.success
        entries = instance.all_logs(run_id)
        by_type = Counter(e.dagster_event.event_type_value for e in entries if e.dagster_event)
        marks = {}
        for e in entries:
            if e.dagster_event and e.dagster_event.event_type_value in (
                "STEP_START", "STEP_SUCCESS", "STEP_FAILURE"
            ):
                marks.setdefault(e.step_key, []).append(e.timestamp)
        in_steps = sum(max(t) - min(t) for t in marks.values())
        runs.append({
            "manifest_id": manifest_id,
            "slug": slug,
            "run_id": run_id,
            "success": success,
            "wall_s": wall,
            "in_steps_s": in_steps,
            "entries": len(entries),
            "dagster_events": sum(by_type.values()),
            "by_type": dict(sorted(by_type.items())),
            "steps": sorted({e.step_key for e in entries if e.step_key}),
        })
print(json.dumps({"code": factory_assets.__file__, "runs": runs}))
"""


def combinations(store_path: Path) -> list[tuple[str, str]]:
    """Every combination with a local executor, in a stable order."""
    store = load_store(store_path)
    return sorted((m, p.slug) for m, p in store.combinations() if not p.gpu)


def record_timings(data_dir: Path) -> dict[str, dict[str, float]]:
    """run id -> the record's timings_s, read straight from the record files (any code version)."""
    found = {}
    for path in (data_dir / "records").glob("*.json"):
        record = json.loads(path.read_text())
        run_id = (record.get("dagster") or {}).get("run_id")
        if run_id:
            found[run_id] = record.get("timings_s") or {}
    return found


def run_pass(
    code_root: Path, shape_dir: Path, env: dict[str, str], executor: str, combos: list
) -> list[dict]:
    """One process, one run per combination; each run with its record's timings and overhead."""
    home = shape_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    cwd = shape_dir / "cwd"
    cwd.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", PASS_CODE, str(code_root), executor, json.dumps(combos)],
        cwd=cwd,
        env={
            **env,
            "PYTHONPATH": str(code_root),
            "DAGSTER_HOME": str(home),
            "FACTORY_DATA_DIR": str(shape_dir / "data"),
        },
        capture_output=True,
        text=True,
        timeout=PASS_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        msg = f"pass in {code_root} ({executor}) failed:\n{proc.stderr[-6000:]}"
        raise RuntimeError(msg)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(out["code"]).resolve().is_relative_to(code_root.resolve()):
        msg = f"factory_assets came from {out['code']}, not from {code_root}"
        raise RuntimeError(msg)
    timings = record_timings(shape_dir / "data")
    for run in out["runs"]:
        if run["run_id"] not in timings:
            msg = f"no record for run {run['run_id']} ({run['manifest_id']} {run['slug']})"
            raise RuntimeError(msg)
        work = sum(timings[run["run_id"]].get(name, 0.0) for name in RECORD_TIMINGS)
        run["work_s"] = round(work, 3)
        run["overhead_s"] = round(run["wall_s"] - work, 3)
        # Outside any step: run start and end, the plan, resources, step processes starting.
        run["outside_steps_s"] = round(run["wall_s"] - run["in_steps_s"], 3)
        run["wall_s"] = round(run["wall_s"], 3)
    return out["runs"]


def summarize(runs: list[dict]) -> dict:
    return {
        "runs": len(runs),
        "passed": sum(1 for r in runs if r["success"]),
        # Steps that started (a failing run's later steps are skipped, in the five-step shape).
        "steps_started": sorted({r["by_type"].get("STEP_START", 0) for r in runs}),
        "entries_per_run": statistics.median(r["entries"] for r in runs),
        "dagster_events_per_run": statistics.median(r["dagster_events"] for r in runs),
        "handled_outputs": sum(r["by_type"].get("HANDLED_OUTPUT", 0) for r in runs),
        "loaded_inputs": sum(r["by_type"].get("LOADED_INPUT", 0) for r in runs),
        "wall_s_median": round(statistics.median(r["wall_s"] for r in runs), 2),
        "work_s_median": round(statistics.median(r["work_s"] for r in runs), 2),
        "overhead_s_median": round(statistics.median(r["overhead_s"] for r in runs), 2),
        "outside_steps_s_median": round(statistics.median(r["outside_steps_s"] for r in runs), 2),
        "wall_s_sum": round(sum(r["wall_s"] for r in runs), 1),
        # Where the events come from: the mean count of each Dagster event type per run.
        "by_type_mean": {
            name: round(sum(r["by_type"].get(name, 0) for r in runs) / len(runs), 1)
            for name in sorted({t for r in runs for t in r["by_type"]})
        },
    }


def measure(tmp: Path, old_root: Path, repeat: int, executors: tuple[str, ...]) -> dict:
    code = {"five_steps": old_root, "one_step": PROJECT_ROOT}
    results: dict[str, dict[str, list[dict]]] = {s: {e: [] for e in executors} for s in SHAPES}
    with workspace(tmp / "ws") as ws, extra_engine(tmp) as host:
        env = {**os.environ, **ws.env(host)}
        for name in ("FACTORY_EXECUTOR", "FACTORY_S3_BUCKET"):
            env.pop(name, None)  # the local default executor and record store, in both shapes
        combos = combinations(ws.store)
        for shape in SHAPES:
            started = time.monotonic()
            warm = run_pass(code[shape], tmp / shape, env, "in_process", combos)
            print(
                f"warm-up {shape}: {len(warm)} runs in {time.monotonic() - started:.1f}s",
                flush=True,
            )
        for i in range(repeat):
            for executor in executors:
                for shape in SHAPES:  # alternate, so load drift hits both shapes alike
                    runs = run_pass(code[shape], tmp / shape, env, executor, combos)
                    results[shape][executor].extend(runs)
                    row = {"round": i + 1, "shape": shape, "executor": executor}
                    print(json.dumps({**row, **summarize(runs)}), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument("--executors", default=",".join(EXECUTORS), help="in_process,multiprocess")
    args = parser.parse_args()
    executors = tuple(e.strip() for e in args.executors.split(",") if e.strip())
    if not executors or set(executors) - set(EXECUTORS):
        parser.error(f"--executors: a comma-separated subset of {','.join(EXECUTORS)}")
    clock = HostClock()
    # Short: the engine's unix socket lives under it.
    tmp = Path(tempfile.mkdtemp(prefix="fx-"))
    old_root = tmp / "old"
    subprocess.run(
        [
            "git",
            "-C",
            str(PROJECT_ROOT),
            "worktree",
            "add",
            "--detach",
            str(old_root),
            args.old_commit,
        ],
        check=True,
        capture_output=True,
    )
    try:
        results = measure(tmp, old_root, args.repeat, executors)
    finally:
        subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "worktree", "remove", "--force", str(old_root)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)
    summary: dict = {"old_commit": args.old_commit, "repeat": args.repeat}
    print()
    print(
        f"{'executor':<13}{'shape':<12}{'steps':>6}{'events':>8}{'entries':>9}"
        f"{'wall s':>8}{'work s':>8}{'overhead s':>12}{'outside steps s':>17}"
        "   (medians per combination)"
    )
    for executor in executors:
        for shape in SHAPES:
            figures = summarize(results[shape][executor])
            summary[f"{executor}/{shape}"] = figures
            steps = "/".join(str(n) for n in figures["steps_started"])
            print(
                f"{executor:<13}{shape:<12}{steps:>6}{figures['dagster_events_per_run']:>8}"
                f"{figures['entries_per_run']:>9}{figures['wall_s_median']:>8.2f}"
                f"{figures['work_s_median']:>8.2f}{figures['overhead_s_median']:>12.2f}"
                f"{figures['outside_steps_s_median']:>17.2f}"
            )
    print("\nDagster events per run by type (mean over the combinations):")
    for executor in executors:
        for shape in SHAPES:
            by_type = summary[f"{executor}/{shape}"]["by_type_mean"]
            print(f"{executor}/{shape}: " + ", ".join(f"{k} {v:g}" for k, v in by_type.items()))
    summary.update(clock.figures())
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
