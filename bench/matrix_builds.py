"""Build figures of the example matrix through `factory run`, from known cache states.

    .venv/bin/python -m bench.matrix_builds [--parallel 2] [--repeat 3]

Needs root and `factory services up` (the busybox base is copied from the project's registry).
Everything runs in an isolated workspace (bench/isolated.py): a temporary registry whose
namespace holds only the base, a store copy pointing at it, its own records and DAGSTER_HOME, and
extra Docker Engines with empty data roots. Phases:

1. cold: a fresh engine, an empty registry namespace: the whole matrix is built;
2. warm no-op: the same command again (only a combination whose last record failed re-runs);
3. light-fragment change: the `light` fragment is edited; the manifests using it are rebuilt and
   the stable layers (the security and core RUN steps) must all come from cache (target 100%);
4. fresh engine with the registry cache: a second empty engine rebuilds every combination
   (`--force`) with only the registry's per-arch cache refs to draw on; compared with phase 1.

Each round starts from a new registry and new engines; the figures printed last are medians.
"""

import json
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.isolated import (
    HostClock,
    Workspace,
    ratio,
    repeat_rounds,
    rounds_parser,
    summarize,
    workspace,
)
from factory.services.extra_engine import extra_engine

LIGHT = "modules/light/0.1.0.Dockerfile"
LIGHT_CHANGE = "RUN printf 'FACTORY_LIGHT_BENCH=changed\\n' >> /etc/factory-release\n"


def phase(ws: Workspace, host: str, name: str, *args: str) -> dict:
    before = {r.build_id for r in ws.records()}
    run = ws.factory(host, "run", *args)
    fresh = [r for r in ws.records() if r.build_id not in before]
    figures = {"phase": name, "seconds": round(run.seconds, 2), **summarize(ws, fresh)}
    figures["run_hit_ratio"] = ratio(figures["run_steps_cached"], figures["run_steps"])
    figures["stable_hit_ratio"] = ratio(figures["stable_steps_cached"], figures["stable_steps"])
    print(json.dumps(figures), flush=True)
    return figures


def describe(f: dict) -> str:
    return (
        f"{f['phase']:<28} {f['seconds']:7.1f}s wall  {f['combinations']} recorded "
        f"({f['rebuilt']} built)  build {f['build_s_sum']:6.1f}s  "
        f"RUN steps cached {f['run_steps_cached']}/{f['run_steps']}  "
        f"stable {f['stable_steps_cached']}/{f['stable_steps']}"
    )


def one_round(parallel: tuple[str, str]) -> list[dict]:
    """The four phases, from a fresh registry namespace and fresh engines."""
    # Short: the engines' unix sockets live under it.
    tmp = Path(tempfile.mkdtemp(prefix="fx-"))
    try:
        with workspace(tmp / "ws") as ws:
            with extra_engine(tmp) as first:
                results = [phase(ws, first, "cold", *parallel)]
                results.append(phase(ws, first, "warm no-op", *parallel))
                light = ws.store.parent / LIGHT
                light.write_text(light.read_text() + LIGHT_CHANGE)
                results.append(phase(ws, first, "light-fragment change", *parallel))
            with extra_engine(tmp) as second:
                results.append(
                    phase(ws, second, "fresh engine + registry cache", "--force", *parallel)
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def median_phase(rounds: list[list[dict]], index: int) -> dict:
    """A phase's medians over the rounds (seconds, sums and counts alike)."""
    phases = [r[index] for r in rounds]
    merged = dict(phases[0])
    for key, value in phases[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            merged[key] = statistics.median(p[key] for p in phases)
    merged["run_hit_ratio"] = ratio(merged["run_steps_cached"], merged["run_steps"])
    merged["stable_hit_ratio"] = ratio(merged["stable_steps_cached"], merged["stable_steps"])
    return merged


def main() -> None:
    args = rounds_parser(__doc__.splitlines()[0]).parse_args()
    clock = HostClock()
    rounds = repeat_rounds(args.repeat, lambda: one_round(("--parallel", str(args.parallel))))
    results = [median_phase(rounds, i) for i in range(len(rounds[0]))]
    cold, light, fresh = results[0], results[2], results[3]
    summary = {
        "parallel": args.parallel,
        "repeat": args.repeat,
        **clock.figures(),
        "cold_s": cold["seconds"],
        "warm_noop_s": results[1]["seconds"],
        "light_change_s": light["seconds"],
        "fresh_engine_s": fresh["seconds"],
        "cold_build_s": cold["build_s_sum"],
        "fresh_engine_build_s": fresh["build_s_sum"],
        "build_speedup": round(cold["build_s_sum"] / fresh["build_s_sum"], 2)
        if fresh["build_s_sum"]
        else None,
        "light_change_stable_hit_ratio": light["stable_hit_ratio"],
        "cold_run_hit_ratio": cold["run_hit_ratio"],
        "fresh_engine_run_hit_ratio": fresh["run_hit_ratio"],
    }
    print(json.dumps({"summary": summary}))
    print(f"\nmedians of {args.repeat} rounds, --parallel {args.parallel}:")
    for f in results:
        print(describe(f))
    print(
        f"\nbuild seconds (sum over combinations): cold {summary['cold_build_s']:.1f}s vs fresh "
        f"engine with registry cache {summary['fresh_engine_build_s']:.1f}s "
        f"({summary['build_speedup']}x); light change: stable layers cached "
        f"{light['stable_steps_cached']}/{light['stable_steps']}; total {summary['total_s']:.0f}s"
    )


if __name__ == "__main__":
    main()
