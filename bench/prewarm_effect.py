"""What prewarm buys a new executor: each combination's first build on an empty engine.

    .venv/bin/python -m bench.prewarm_effect

Needs root, `factory services up`, and `Engine.build(..., extra_cache_from=...)` (the change that
lets a manifest build import its stack cache ref; see docs/performance.md). Two isolated
workspaces (bench/isolated.py), so no manifest has a cache ref of its own yet:

- without prewarm: every combination is built on its own fresh engine, importing only its own
  (absent) cache ref and the (absent) stack ref;
- with prewarm: `factory.build.prewarm.prewarm` pushes the stack refs first (from another fresh
  engine), then every combination is built the same way.

Reported: stable (security/core) and all RUN steps cached, and build + push seconds summed.
"""

import inspect
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.isolated import Workspace, ratio, workspace
from factory.build.buildlog import cache_imports, matching_steps, run_steps
from factory.build.engine import Engine
from factory.build.prewarm import prewarm, stack_cache_ref_for
from factory.plan.decisions import resolve_base_digests
from factory.platforms import PLATFORMS
from factory.services.extra_engine import extra_engine
from factory.store.keys import build_key, cache_ref, combination_inputs, image_ref
from factory.store.load import load_store
from factory.store.render import render_dockerfile


def first_builds(ws: Workspace, tmp: Path) -> list[dict]:
    """Each runnable combination built and pushed on an engine that never built anything."""
    store = load_store(ws.store)
    combos = [(m, p) for m, p in store.combinations() if not p.gpu]
    digests = resolve_base_digests(store, combos)
    snippets = ws.stable_snippets()
    rows = []
    for manifest_id, platform in combos:
        inputs = combination_inputs(
            store,
            manifest_id,
            platform,
            digests[(store.manifest(manifest_id).base, platform.oci_platform)],
        )
        key = build_key(inputs)
        image = image_ref(ws.registry, manifest_id, platform, key)
        own = cache_ref(ws.registry, manifest_id, platform)
        stack = stack_cache_ref_for(store, manifest_id, platform, ws.registry)
        with extra_engine(tmp) as host:
            engine = Engine(host)
            started = time.monotonic()
            result = engine.build(
                dockerfile=render_dockerfile(store, inputs, key).text,
                image_ref=image,
                cache_ref=own,
                oci_platform=platform.oci_platform,
                extra_cache_from=(stack,) if stack else (),
            )
            engine.push(image)
            engine.push(own)
            seconds = time.monotonic() - started
        stable = matching_steps(result.log, snippets)
        runs = run_steps(result.log)
        rows.append(
            {
                "combination": f"{manifest_id} {platform.name}",
                "imports": cache_imports(result.log),
                "stable_steps": len(stable),
                "stable_cached": sum(1 for s in stable if s.cached),
                "run_steps": len(runs),
                "run_cached": sum(1 for s in runs if s.cached),
                "build_push_s": round(seconds, 2),
            }
        )
    return rows


def scenario(tmp: Path, name: str, *, with_prewarm: bool) -> dict:
    with workspace(tmp / name) as ws:
        figures: dict = {"scenario": name}
        if with_prewarm:
            store = load_store(ws.store)
            # GPU combinations have no executor here; prewarm skips platforms no stack lists.
            platforms = [p for p in PLATFORMS if not p.gpu]
            with extra_engine(tmp) as host:
                started = time.monotonic()
                builds = prewarm(
                    store, engine=Engine(host), registry=ws.registry, platforms=platforms
                )
                figures["prewarm_s"] = round(time.monotonic() - started, 2)
            figures["stacks_pushed"] = len(builds)
        rows = first_builds(ws, tmp)
    for key in ("stable_steps", "stable_cached", "run_steps", "run_cached"):
        figures[key] = sum(r[key] for r in rows)
    figures["stable_hit_ratio"] = ratio(figures["stable_cached"], figures["stable_steps"])
    figures["build_push_s_sum"] = round(sum(r["build_push_s"] for r in rows), 2)
    figures["combinations"] = rows
    print(json.dumps(figures), flush=True)
    return figures


def main() -> None:
    if "extra_cache_from" not in inspect.signature(Engine.build).parameters:
        sys.exit(
            "Engine.build has no extra_cache_from parameter yet: a manifest build cannot import "
            "its stack cache ref, so there is nothing to measure (see docs/performance.md)"
        )
    tmp = Path(tempfile.mkdtemp(prefix="fx-"))
    try:
        without = scenario(tmp, "without-prewarm", with_prewarm=False)
        with_ = scenario(tmp, "with-prewarm", with_prewarm=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    for f in (without, with_):
        extra = f" (prewarm itself {f['prewarm_s']:.1f}s)" if "prewarm_s" in f else ""
        print(
            f"{f['scenario']:<16} stable steps cached {f['stable_cached']}/{f['stable_steps']}, "
            f"RUN steps cached {f['run_cached']}/{f['run_steps']}, first builds "
            f"{f['build_push_s_sum']:.1f}s summed{extra}"
        )


if __name__ == "__main__":
    main()
