"""Prewarm: push the stable prefix of every stack to a per-arch cache ref before any build needs it.

A manifest's own cache ref (`<manifest>-cache:<slug>`) only exists after that manifest was built
once, so a new manifest, or a new executor's first build of one, starts cold even though its base,
security and core layers are the same as its neighbours'. Those shared layers form a *stack*: the
base plus the leading stable fragments (security, core) in the manifests' order. For each distinct
stack and platform, prewarm renders a prefix Dockerfile (FROM the pinned base, then those
fragments), builds it with the inline cache and pushes it to
`<registry>/factory/stack-<key>-cache:<slug>`. A manifest build that also passes that ref to
`--cache-from` then gets every stable layer from it (the RUN steps have the same cache keys,
because the prefix is instruction for instruction the start of the rendered Dockerfile).

`check_coverage` says which manifests a stack really serves: a template that puts an instruction
before the fragments makes different cache keys, and such a manifest is reported, not assumed.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from factory.build.buildlog import dockerfile_instructions, run_steps
from factory.build.engine import Engine
from factory.plan.decisions import resolve_base_digests
from factory.platforms import PLATFORMS, Platform
from factory.store.keys import (
    BUILD_RECIPE_VERSION,
    build_key,
    canonical_json,
    combination_inputs,
    sha256_hex,
)
from factory.store.load import LoadedStore
from factory.store.render import LABEL_PREFIX, render_dockerfile

# The fragments that change rarely and come first in every manifest: the layers worth sharing.
STABLE_FRAGMENTS = ("security", "core")
STACK_KEY_CHARS = 12

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Stack:
    """A base and the leading stable fragments (name, version) that some manifests start with."""

    base: str
    fragments: tuple[tuple[str, str], ...]
    key: str
    manifests: tuple[str, ...]
    platforms: tuple[str, ...]  # platform names any of its manifests lists, in table order

    def label(self) -> str:
        parts = "+".join(f"{name}@{version}" for name, version in self.fragments)
        return f"{self.base}+{parts}"


@dataclass(frozen=True)
class StackBuild:
    """One stack prewarmed on one platform: where its cache went and how much came from cache."""

    stack: str
    label: str
    platform: str
    cache_ref: str
    digest: str
    steps: int
    cached: int
    run_steps: int
    run_cached: int
    seconds: float


def stable_prefix(store: LoadedStore, manifest_id: str) -> tuple[tuple[str, str], ...]:
    """The manifest's leading stable fragments, in its order; empty when it starts otherwise.

    Only a prefix can come from a shared cache: a layer's key depends on every layer under it.
    """
    prefix = []
    for name, version in store.manifest(manifest_id).fragments.items():
        if name not in STABLE_FRAGMENTS:
            break
        prefix.append((name, version))
    return tuple(prefix)


def stack_key(store: LoadedStore, base: str, fragments: tuple[tuple[str, str], ...]) -> str:
    """A short hash of what shapes the stack's layers on every platform.

    The base is named by its multi-arch ref, not a digest: the ref name stays stable while the
    content follows the base, as the manifests' own cache refs do. Fragment content hashes are
    included, so an edited fragment gets a new stack.
    """
    image = store.model.bases[base]
    value = {
        "recipe": BUILD_RECIPE_VERSION,
        "base": f"{image.image}:{image.tag}",
        "fragments": [
            {"name": name, "version": version, "sha256": store.module_file(name, version).sha256}
            for name, version in fragments
        ],
    }
    return sha256_hex(canonical_json(value))[:STACK_KEY_CHARS]


def stack_cache_ref(registry: str, key: str, platform: Platform) -> str:
    """The per-platform cache ref of a stack: like a manifest's, never shared across arches."""
    return f"{registry}/factory/stack-{key}-cache:{platform.slug}"


def stack_cache_ref_for(
    store: LoadedStore, manifest_id: str, platform: Platform, registry: str
) -> str | None:
    """The stack cache ref a manifest's build should also import; None without a stable prefix."""
    fragments = stable_prefix(store, manifest_id)
    if not fragments:
        return None
    key = stack_key(store, store.manifest(manifest_id).base, fragments)
    return stack_cache_ref(registry, key, platform)


def gpu_cache_refs(
    store: LoadedStore, manifest_id: str, platform: Platform, registry: str
) -> tuple[str, ...]:
    """Extra cache refs a GPU build imports: the amd64 stack ref of the same stack.

    A GPU variant builds for linux/amd64 from the same base and stable fragments, so its stable
    layers have the amd64 build's cache keys; GPU-only layers come after them.
    """
    if not platform.gpu:
        return ()
    amd64 = next(p for p in PLATFORMS if p.oci_platform == platform.oci_platform and not p.gpu)
    ref = stack_cache_ref_for(store, manifest_id, amd64, registry)
    return (ref,) if ref else ()


def distinct_stacks(store: LoadedStore) -> list[Stack]:
    """Every distinct stack in the store, with the manifests on it and the platforms they list."""
    members: dict[tuple[str, tuple[tuple[str, str], ...]], list[str]] = {}
    for manifest_id in sorted(store.model.manifests):
        fragments = stable_prefix(store, manifest_id)
        if fragments:
            members.setdefault((store.manifest(manifest_id).base, fragments), []).append(
                manifest_id
            )
    stacks = []
    for (base, fragments), manifest_ids in sorted(members.items()):
        listed = {p for m in manifest_ids for p in store.manifest(m).platforms}
        stacks.append(
            Stack(
                base=base,
                fragments=fragments,
                key=stack_key(store, base, fragments),
                manifests=tuple(manifest_ids),
                platforms=tuple(p.name for p in PLATFORMS if p.name in listed),
            )
        )
    return stacks


def prefix_dockerfile(store: LoadedStore, stack: Stack, pinned_base: str, platform: str) -> str:
    """FROM the pinned base, then the stack's fragments exactly as the template renders them.

    The labels add no build step, so they do not change any layer's cache key.
    """
    parts = [f"# Factory stack {stack.key} ({stack.label()}) on {platform}.", f"FROM {pinned_base}"]
    for name, version in stack.fragments:
        parts.append(f"# fragment: {name}")
        parts.append(store.module_file(name, version).text.rstrip("\n"))
    parts.append(f'LABEL {LABEL_PREFIX}.stack="{stack.key}" {LABEL_PREFIX}.platform="{platform}"')
    return "\n".join(parts) + "\n"


def _step_instructions(dockerfile: str) -> list[str]:
    """Instructions that take part in layer cache keys (LABEL changes only the image config)."""
    return [i for i in dockerfile_instructions(dockerfile) if not i.upper().startswith("LABEL ")]


def covers(prefix: str, rendered: str) -> bool:
    """Whether a rendered Dockerfile starts with the prefix, instruction for instruction."""
    want = _step_instructions(prefix)
    return dockerfile_instructions(rendered)[: len(want)] == want


def check_coverage(
    store: LoadedStore, stack: Stack, platform: Platform, pinned_base: str, base_digest: str
) -> tuple[list[str], list[str]]:
    """(covered, not covered) manifests of a stack on a platform, by rendering each one."""
    prefix = prefix_dockerfile(store, stack, pinned_base, platform.name)
    covered, missed = [], []
    for manifest_id in stack.manifests:
        if platform.name not in store.manifest(manifest_id).platforms:
            continue
        inputs = combination_inputs(store, manifest_id, platform, base_digest)
        rendered = render_dockerfile(store, inputs, build_key(inputs)).text
        (covered if covers(prefix, rendered) else missed).append(manifest_id)
    return covered, missed


def prewarm(
    store: LoadedStore,
    *,
    engine: Engine,
    registry: str,
    platforms: Iterable[Platform],
    echo: Echo = lambda _: None,
) -> list[StackBuild]:
    """Build and push every stack's prefix on each of `platforms` its manifests list.

    Each build imports the stack's own cache ref first, so a repeated prewarm only re-pushes.
    Raises StageError (stage `build` or `push`) naming the stack and platform on failure.
    """
    wanted = list(platforms)
    stacks = distinct_stacks(store)
    pairs = [(stack, p) for stack in stacks for p in wanted if p.name in stack.platforms]
    combos = [(stack.manifests[0], p) for stack, p in pairs]
    digests = resolve_base_digests(store, combos)
    results = []
    for stack, platform in pairs:
        base = store.model.bases[stack.base]
        digest = digests[(stack.base, platform.oci_platform)]
        pinned = f"{base.image}@{digest}"
        covered, missed = check_coverage(store, stack, platform, pinned, digest)
        if missed:
            echo(
                f"stack {stack.key} on {platform.name}: {', '.join(missed)} render something "
                "before the stable fragments and cannot use it"
            )
        ref = stack_cache_ref(registry, stack.key, platform)
        started = time.monotonic()
        result = engine.build(
            dockerfile=prefix_dockerfile(store, stack, pinned, platform.name),
            image_ref=ref,
            cache_ref=ref,
            oci_platform=platform.oci_platform,
        )
        pushed, _ = engine.push(ref)
        runs = run_steps(result.log)
        build = StackBuild(
            stack=stack.key,
            label=stack.label(),
            platform=platform.name,
            cache_ref=ref,
            digest=pushed,
            steps=result.steps,
            cached=result.cached,
            run_steps=len(runs),
            run_cached=sum(1 for s in runs if s.cached),
            seconds=round(time.monotonic() - started, 3),
        )
        echo(
            f"stack {stack.key} ({stack.label()}) on {platform.name}: {build.run_cached}/"
            f"{build.run_steps} RUN steps cached, {build.seconds:.1f}s -> {ref} "
            f"({len(covered)} manifests)"
        )
        results.append(build)
    return results
