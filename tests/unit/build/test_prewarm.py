"""Stacks: which manifests share a stable prefix, its cache ref, and that the prefix matches."""

import json
import shutil

import pytest

from factory.build.prewarm import (
    check_coverage,
    covers,
    distinct_stacks,
    prefix_dockerfile,
    stable_prefix,
    stack_cache_ref,
    stack_cache_ref_for,
)
from factory.platforms import BY_NAME
from factory.settings import PROJECT_ROOT
from factory.store.keys import build_key, combination_inputs
from factory.store.load import load_store
from factory.store.render import render_dockerfile

EXAMPLE = PROJECT_ROOT / "control_plane" / "data"
DIGEST = "sha256:" + "d" * 64
AMD64, ARM64 = BY_NAME["linux/amd64"], BY_NAME["linux/arm64"]


def store_copy(tmp_path, mutate=None, files=None):
    root = tmp_path / "store"
    shutil.copytree(EXAMPLE, root)
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    if mutate:
        mutate(data)
    path.write_text(json.dumps(data))
    for rel, text in (files or {}).items():
        (root / rel).write_text(text)
    return load_store(path)


def pinned(store, stack):
    return f"{store.model.bases[stack.base].image}@{DIGEST}"


def test_example_store_has_one_stack_over_every_manifest():
    store = load_store(EXAMPLE / "manifest.json")
    [stack] = distinct_stacks(store)
    assert stack.fragments == (("security", "0.1.0"), ("core", "0.1.0"))
    assert stack.manifests == tuple(sorted(store.model.manifests))
    assert stack.platforms == ("linux/amd64", "linux/arm64", "linux/amd64+gpu")


@pytest.mark.parametrize(
    ("fragments", "prefix"),
    [
        ({"security": "0.1.0", "core": "0.1.0", "light": "0.1.0"}, ("security", "core")),
        ({"security": "0.1.0", "light": "0.1.0", "core": "0.1.0"}, ("security",)),
        ({"light": "0.1.0", "security": "0.1.0", "core": "0.1.0"}, ()),
        ({"core": "0.1.0", "security": "0.1.0"}, ("core", "security")),
    ],
)
def test_stable_prefix_is_the_leading_stable_fragments(tmp_path, fragments, prefix):
    store = store_copy(
        tmp_path, lambda d: d["manifests"]["llm_factory"].update(fragments=fragments)
    )
    assert tuple(name for name, _ in stable_prefix(store, "llm_factory")) == prefix
    ref = stack_cache_ref_for(store, "llm_factory", ARM64, "reg:5000")
    assert (ref is None) == (not prefix)


def test_stack_key_follows_stable_fragments_only(tmp_path):
    base = distinct_stacks(store_copy(tmp_path / "a"))[0].key
    light = store_copy(tmp_path / "b", files={"modules/light/0.1.0.Dockerfile": "RUN true\n"})
    core = store_copy(tmp_path / "c", files={"modules/core/0.1.0.Dockerfile": "RUN true\n"})
    assert distinct_stacks(light)[0].key == base
    assert distinct_stacks(core)[0].key != base


def test_stack_cache_refs_are_per_platform():
    refs = {stack_cache_ref("reg:5000", "abc", p) for p in BY_NAME.values()}
    assert refs == {
        "reg:5000/factory/stack-abc-cache:linux_amd64",
        "reg:5000/factory/stack-abc-cache:linux_arm64",
        "reg:5000/factory/stack-abc-cache:linux_amd64_gpu",
    }


@pytest.mark.parametrize("platform", [AMD64, ARM64])
def test_prefix_is_the_start_of_every_manifest_on_the_stack(platform):
    store = load_store(EXAMPLE / "manifest.json")
    [stack] = distinct_stacks(store)
    covered, missed = check_coverage(store, stack, platform, pinned(store, stack), DIGEST)
    listing = sorted(m for m in stack.manifests if platform.name in store.manifest(m).platforms)
    assert (covered, missed) == (listing, [])


def test_a_template_with_a_step_before_the_fragments_is_not_covered(tmp_path):
    template = "templates/service.Dockerfile.j2"
    text = (
        (EXAMPLE / template).read_text().replace("FROM {{ base }}\n", "FROM {{ base }}\nRUN true\n")
    )
    store = store_copy(tmp_path, files={template: text})
    [stack] = distinct_stacks(store)
    covered, missed = check_coverage(store, stack, AMD64, pinned(store, stack), DIGEST)
    assert covered == [] and "llm_factory" in missed


def test_labels_do_not_break_coverage():
    store = load_store(EXAMPLE / "manifest.json")
    [stack] = distinct_stacks(store)
    prefix = prefix_dockerfile(store, stack, pinned(store, stack), AMD64.name)
    inputs = combination_inputs(store, "edge_proxy", AMD64, DIGEST)
    rendered = render_dockerfile(store, inputs, build_key(inputs)).text
    assert "LABEL" in prefix and covers(prefix, rendered)
    assert not covers(prefix, rendered.replace(DIGEST, "sha256:" + "e" * 64))
