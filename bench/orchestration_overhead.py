"""What Dagster and record keeping cost: the example matrix by a shell loop vs `factory run`.

    .venv/bin/python -m bench.orchestration_overhead [--parallel 2] [--repeat 3] [--copies 1]

Needs root and `factory services up`. Both sides build the same Dockerfiles (rendered by the same
code as `factory render`), with the same BuildKit flags (`--platform`, inline cache,
`--cache-from` the per-arch cache ref), push the image and cache ref, and run each test suite in a
container with the same limits, `--parallel` combinations at a time. The shell side is
`xargs -P N` over a bash script of `docker build`, `docker push` and `docker run`; the Dagster
side is `factory run` (plan, one Dagster run per combination, SBOM, evidence, provenance and
records, then the matrix asset). Each side has its own isolated workspace (bench/isolated.py) and
engine, measured from the same two states:

- cold: fresh engines, registry namespaces holding only the base;
- unchanged: the same again with nothing changed. The loop builds (all cached) and tests
  everything again; `factory run` should plan, find nothing to do and start no run;
- cached: the same engines and registries again, everything in cache (`factory run --force`).

Each side also reports the CPU time the host spent while it ran (`cpu_s`, every core and process:
engine, BuildKit, QEMU and registry included). On a host with few cores both sides are bound by
CPU, so the difference in CPU explains most of the difference in wall time.

It also times `factory --help` (the fixed cost of starting the command), median of five.

`--copies N` makes the matrix N times larger (each manifest again under N-1 other ids, the same
recipe, so N x 7 images to build): the fixed cost of `factory run` is spread over more
combinations, and the ratio tends to the per-combination one.

Each state is measured `--repeat` times (fresh engines and registries for every cold round);
the ratio is Dagster wall time over shell wall time, medians.

`factory run`'s workers are forked from a resident worker server (factory/workers/resident.py),
which `factory services up` starts and which stays after a command. The benchmark gives it a
folder of its own, with no server in it at the start: the first round's cold `factory run`
starts the server (as on a host where nothing started it), the later rounds find it running (as
after `factory services up` or an earlier command). The first round is reported on its own
("cold, first command"), and the cold medians and target are over the later rounds.
"""

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.isolated import (
    HostClock,
    Workspace,
    busy_core_seconds,
    repeat_rounds,
    rounds_parser,
    summarize,
    workspace,
)
from factory.build.buildlog import run_steps
from factory.plan.decisions import resolve_base_digests
from factory.services.extra_engine import extra_engine
from factory.store.keys import build_key, cache_ref, combination_inputs, image_ref
from factory.store.load import load_store
from factory.store.render import render_dockerfile
from factory.workers import resident

FACTORY = Path(sys.executable).parent / "factory"
# The target for a cold run of the example matrix: `factory run` at most this many times
# the plain loop's wall time.
COLD_TARGET = 1.5
RUN_LINE_RE = re.compile(r"^\[\d+/\d+\] .* in ([\d.]+)s\b", re.MULTILINE)

# The same limits as factory.build.engine.Engine.run_suite.
COMBINATION_SH = r"""#!/bin/bash
# One combination: build (BuildKit, inline cache), push image and cache ref, run each suite.
set -u
start=$(date +%s.%N)
dir=$1 oci=$2 image=$3 cache=$4 manifest=$5 platform=$6
shift 6
log=$dir/log
results=$dir/../results
{
  DOCKER_BUILDKIT=1 /usr/bin/docker build --progress=plain --platform "$oci" \
    --build-arg BUILDKIT_INLINE_CACHE=1 --cache-from "$cache" -t "$image" -t "$cache" \
    -f "$dir/Dockerfile" "$dir/context" &&
  /usr/bin/docker push "$image" && /usr/bin/docker push "$cache"
} >"$log" 2>&1 || { echo "$manifest $platform error $start $(date +%s.%N)" >>"$results"; exit 0; }
status=pass
for suite in "$@"; do
  name=${suite%%:*} rest=${suite#*:}
  timeout_s=${rest%%:*} script=${rest#*:}
  timeout "$((timeout_s + 10))" /usr/bin/docker run --rm --platform "$oci" --network none \
    --memory 512m --pids-limit 256 --cap-drop ALL --security-opt no-new-privileges \
    -e FACTORY_MANIFEST_ID="$manifest" -e FACTORY_PLATFORM="$platform" \
    -v "$script:/factory/tests/$name.sh:ro" "$image" /bin/sh "/factory/tests/$name.sh" \
    >>"$log" 2>&1 || status=fail
done
echo "$manifest $platform $status $start $(date +%s.%N)" >>"$results"
"""


def prepare_shell_jobs(ws: Workspace, folder: Path) -> Path:
    """Render every runnable combination and write one job line each, in `factory run`'s order."""
    store = load_store(ws.store)
    combos = [(m, p) for m, p in store.combinations() if not p.gpu]
    digests = resolve_base_digests(store, combos)
    # run_items' order: high priority first, then manifest id and platform.
    combos.sort(key=lambda c: (store.manifest(c[0]).priority != "high", c[0], c[1].name))
    lines = []
    for manifest_id, platform in combos:
        manifest = store.manifest(manifest_id)
        inputs = combination_inputs(
            store, manifest_id, platform, digests[(manifest.base, platform.oci_platform)]
        )
        key = build_key(inputs)
        job = folder / f"{manifest_id}-{platform.slug}"
        (job / "context").mkdir(parents=True)
        (job / "Dockerfile").write_text(render_dockerfile(store, inputs, key).text)
        suites = []
        for suite in manifest.tests:
            script = job / f"{suite}.sh"
            script.write_text(store.suite_file(suite).text)
            suites.append(f"{suite}:{store.model.test_suites[suite].timeout_s}:{script}")
        args = [
            str(job),
            platform.oci_platform,
            image_ref(ws.registry, manifest_id, platform, key),
            cache_ref(ws.registry, manifest_id, platform),
            manifest_id,
            platform.name,
            *suites,
        ]
        lines.append(shlex.join(args))
    jobs = folder / "jobs"
    jobs.write_text("\n".join(lines) + "\n")
    (folder / "combination.sh").write_text(COMBINATION_SH)
    return jobs


def run_shell(ws: Workspace, host: str, folder: Path, parallel: int) -> dict:
    """The plain loop: `xargs -P` over the combination script; wall time and outcomes."""
    results = folder / "results"
    results.unlink(missing_ok=True)
    cpu = busy_core_seconds()
    started = time.monotonic()
    subprocess.run(
        f"xargs -P {parallel} -L 1 bash {shlex.quote(str(folder / 'combination.sh'))} "
        f"< {shlex.quote(str(folder / 'jobs'))}",
        shell=True,
        check=True,
        env=ws.env(host),
        timeout=1200,
    )
    seconds = time.monotonic() - started
    cpu = busy_core_seconds() - cpu
    lines = [line.split() for line in results.read_text().splitlines()]
    outcomes = [fields[2] for fields in lines]
    per_combination = [float(fields[4]) - float(fields[3]) for fields in lines]
    # The same cache state as the Dagster side: the RUN steps each build took from cache.
    runs = [s for log in folder.glob("*/log") for s in run_steps(log.read_text(errors="replace"))]
    return {
        "run_steps": len(runs),
        "run_steps_cached": sum(1 for s in runs if s.cached),
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 2),
        "statuses": {s: outcomes.count(s) for s in sorted(set(outcomes))},
        "per_combination_s": round(statistics.mean(per_combination), 2),
    }


def run_dagster(ws: Workspace, host: str, parallel: int, *, force: bool) -> dict:
    server_running = bool(resident.running_servers())
    before = {r.build_id for r in ws.records()}
    args = ["run", "--parallel", str(parallel), *(["--force"] if force else [])]
    cpu = busy_core_seconds()
    run = ws.factory(host, *args)
    cpu = round(busy_core_seconds() - cpu, 2)
    fresh = [r for r in ws.records() if r.build_id not in before]
    if not fresh:
        return {
            "seconds": round(run.seconds, 2),
            "cpu_s": cpu,
            "records": 0,
            "per_combination_s": None,
            "worker_server_was_running": server_running,
        }
    figures = summarize(ws, fresh)
    figures["records"] = len(fresh)
    figures["sbom_s_sum"] = round(sum(r.timings_s.get("sbom", 0.0) for r in fresh), 2)
    # `factory run` prints each run's own duration: "[3/7] pass edge_proxy linux/arm64 in 4.2s".
    per_run = [float(m.group(1)) for m in RUN_LINE_RE.finditer(run.output)]
    figures["per_combination_s"] = round(statistics.mean(per_run), 2) if per_run else None
    figures["worker_server_was_running"] = server_running
    return {"seconds": round(run.seconds, 2), "cpu_s": cpu, **figures}


def one_round(tmp: Path, parallel: int, copies: int) -> list[dict]:
    """Cold then cached, for both sides, each side on its own engine and registry."""
    rows = []
    with (
        workspace(tmp / "shell", copies=copies) as shell_ws,
        workspace(tmp / "dagster", copies=copies) as dagster_ws,
        extra_engine(tmp) as shell_host,
        extra_engine(tmp) as dagster_host,
    ):
        jobs_dir = tmp / "shell" / "jobs"
        jobs_dir.mkdir()
        prepare_shell_jobs(shell_ws, jobs_dir)
        for state, force in (("cold", False), ("unchanged", False), ("cached", True)):
            shell = run_shell(shell_ws, shell_host, jobs_dir, parallel)
            dagster = run_dagster(dagster_ws, dagster_host, parallel, force=force)
            row = {
                "state": state,
                "shell_s": shell["seconds"],
                "dagster_s": dagster["seconds"],
                "ratio": round(dagster["seconds"] / shell["seconds"], 2),
                "shell_cpu_s": shell["cpu_s"],
                "dagster_cpu_s": dagster["cpu_s"],
                "shell_statuses": shell["statuses"],
                "shell_per_combination_s": shell["per_combination_s"],
                "shell_run_steps_cached": f"{shell['run_steps_cached']}/{shell['run_steps']}",
                "dagster": dagster,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = rounds_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--copies",
        type=int,
        choices=range(1, 21),
        default=1,
        metavar="N",
        help="the example matrix N times over, under other manifest ids (1-20; default 1)",
    )
    # One more than the other benchmarks: the first round's cold run also starts the server.
    parser.set_defaults(repeat=4)
    args = parser.parse_args()
    clock = HostClock()
    workers = Path(tempfile.mkdtemp(prefix="fx-workers-"))
    os.environ[resident.DIR_ENV] = str(workers)  # the `factory run`s inherit it
    try:
        _measure(args, clock)
    finally:
        resident.stop_servers()
        shutil.rmtree(workers, ignore_errors=True)


def _measure(args, clock: HostClock) -> None:

    def round_in_tmp() -> list[dict]:
        # Short: the engines' unix sockets live under it.
        tmp = Path(tempfile.mkdtemp(prefix="fx-"))
        try:
            return one_round(tmp, args.parallel, args.copies)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = [row for each in repeat_rounds(args.repeat, round_in_tmp) for row in each]
    summary = {"parallel": args.parallel, "repeat": args.repeat, "copies": args.copies}
    print()
    first = [
        r for r in rows if r["state"] == "cold" and not r["dagster"]["worker_server_was_running"]
    ]
    for r in first:
        summary["cold_first_command"] = {k: r[k] for k in ("shell_s", "dagster_s", "ratio")}
        print(
            f"cold, first command (it starts the worker server): shell loop {r['shell_s']:.1f}s   "
            f"factory run {r['dagster_s']:.1f}s   ratio {r['ratio']:.2f}x"
        )
    for state in ("cold", "unchanged", "cached"):
        mine = [r for r in rows if r["state"] == state and r not in first] or [
            r for r in rows if r["state"] == state
        ]
        shell = statistics.median(r["shell_s"] for r in mine)
        dagster = statistics.median(r["dagster_s"] for r in mine)
        if state == "unchanged":
            records = max(r["dagster"]["records"] for r in mine)
            summary[state] = {
                "shell_s": round(shell, 2),
                "dagster_s": round(dagster, 2),
                "ratio": round(dagster / shell, 2),
                "dagster_new_records": records,
            }
            print(
                f"{state:<9} shell loop {shell:6.1f}s   factory run {dagster:6.1f}s   "
                f"ratio {dagster / shell:.2f}x   ({records} new records; target 3 s, 0 runs)"
            )
            continue
        inner = statistics.median(
            r["dagster"]["build_s_sum"] + r["dagster"]["test_s_sum"] + r["dagster"]["sbom_s_sum"]
            for r in mine
        )
        shell_cpu = statistics.median(r["shell_cpu_s"] for r in mine)
        dagster_cpu = statistics.median(r["dagster_cpu_s"] for r in mine)
        shell_each = statistics.median(r["shell_per_combination_s"] for r in mine)
        dagster_each = statistics.median(
            r["dagster"]["per_combination_s"] or float("nan") for r in mine
        )
        summary[state] = {
            "shell_per_combination_s": round(shell_each, 2),
            "dagster_per_run_s": round(dagster_each, 2),
            "shell_s": round(shell, 2),
            "dagster_s": round(dagster, 2),
            "ratio": round(dagster / shell, 2),
            "dagster_build_test_sbom_s_sum": round(inner, 2),
            "shell_cpu_s": round(shell_cpu, 2),
            "dagster_cpu_s": round(dagster_cpu, 2),
        }
        # The rounds of one state differ a lot on a small host: each round's ratio is shown.
        per_round = [round(r["dagster_s"] / r["shell_s"], 2) for r in mine]
        summary[state]["ratio_per_round"] = per_round
        verdict = ""
        if state == "cold":
            met = "met" if dagster / shell <= COLD_TARGET else "not met"
            verdict = f"; target {COLD_TARGET}x: {met}"
        print(f"{state:<7} ratio per round: {', '.join(f'{r:.2f}x' for r in per_round)}{verdict}")
        print(
            f"{state:<7} shell loop {shell:6.1f}s   factory run (Dagster) {dagster:6.1f}s   "
            f"ratio {dagster / shell:.2f}x   (inside the Dagster runs: build+test+sbom "
            f"{inner:.1f}s summed over combinations)\n"
            f"{'':<7} per combination: shell {shell_each:.2f}s, Dagster run {dagster_each:.2f}s\n"
            f"{'':<7} host CPU: shell {shell_cpu:.1f} core-s, factory run {dagster_cpu:.1f} core-s "
            f"({dagster_cpu / shell_cpu:.2f}x)"
        )
    helps = []
    for _ in range(5):
        began = time.monotonic()
        subprocess.run([str(FACTORY), "--help"], capture_output=True, check=True)
        helps.append(time.monotonic() - began)
    summary["help_s"] = round(statistics.median(helps), 3)
    print(f"factory --help {summary['help_s']:.2f}s (target 0.5 s)")
    summary.update(clock.figures())
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
