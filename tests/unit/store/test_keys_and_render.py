"""Keys, names and rendering: deterministic, and sensitive to exactly the inputs that matter."""

import dataclasses

import pytest

from factory.errors import StageError, StoreError
from factory.platforms import BY_NAME
from factory.store.keys import build_key, cache_ref, combination_inputs, image_ref, record_key
from factory.store.load import load_store
from factory.store.render import render_dockerfile
from tests.unit.store_factory import write_store

AMD64 = BY_NAME["linux/amd64"]
ARM64 = BY_NAME["linux/arm64"]
GPU = BY_NAME["linux/amd64+gpu"]
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def keys(tmp_path, mutate=None, *, platform=AMD64, digest=DIGEST_A, files=None):
    path = write_store(tmp_path, mutate)
    for rel, text in (files or {}).items():
        (path.parent / rel).write_text(text)
    store = load_store(path)
    inputs = combination_inputs(store, "llm_factory", platform, digest)
    return build_key(inputs), record_key(inputs)


def test_keys_are_deterministic(tmp_path):
    assert keys(tmp_path / "a") == keys(tmp_path / "b")


@pytest.mark.parametrize(
    ("change", "build_changes", "record_changes"),
    [
        ({"digest": DIGEST_B}, True, True),
        ({"platform": ARM64}, True, True),
        ({"platform": GPU}, True, True),
        ({"files": {"modules/light/0.1.0.Dockerfile": "ENV X=2\n"}}, True, True),
        ({"files": {"templates/service.Dockerfile.j2": "FROM {{ base }}\n"}}, True, True),
        (
            {"mutate": lambda d: d["manifests"]["llm_factory"]["fragments"].update(core="0.2.0")},
            True,
            True,
        ),
        # A test-suite-only change re-tests: same image, new record.
        ({"files": {"tests/smoke.sh": "#!/bin/sh\nexit 0\n"}}, False, True),
        (
            {"mutate": lambda d: d["manifests"]["llm_factory"].update(tests=["smoke", "http"])},
            False,
            True,
        ),
        ({"mutate": lambda d: d["test_suites"]["smoke"].update(timeout_s=5)}, False, True),
        # Priority shapes neither the image nor its tests.
        ({"mutate": lambda d: d["manifests"]["llm_factory"].update(priority="high")}, False, False),
        # Another manifest's change does not touch this one.
        ({"mutate": lambda d: d["manifests"]["web"].update(priority="normal")}, False, False),
    ],
)
def test_what_changes_which_key(tmp_path, change, build_changes, record_changes):
    before = keys(tmp_path / "before")
    after = keys(tmp_path / "after", **change)
    assert (before[0] != after[0]) is build_changes
    assert (before[1] != after[1]) is record_changes


def test_image_and_cache_names():
    bkey = "0123456789abcdef" * 4
    assert image_ref("127.0.0.1:5000", "llm_factory", ARM64, bkey) == (
        "127.0.0.1:5000/factory/llm_factory:linux_arm64-0123456789ab"
    )
    assert cache_ref("r:1", "m", AMD64) == "r:1/factory/m-cache:linux_amd64"
    # One cache ref per platform: never shared across arches (nor with the GPU variant).
    assert len({cache_ref("r", "m", p) for p in (AMD64, ARM64, GPU)}) == 3


def render(tmp_path, files=None, platform=AMD64):
    path = write_store(tmp_path)
    for rel, text in (files or {}).items():
        (path.parent / rel).write_text(text)
    store = load_store(path)
    inputs = combination_inputs(store, "llm_factory", platform, DIGEST_A)
    return render_dockerfile(store, inputs, build_key(inputs))


def test_render_pins_base_and_orders_fragments(tmp_path):
    text = render(tmp_path).text
    assert "FROM 127.0.0.1:5000/factory/base/busybox@" + DIGEST_A in text
    assert (
        text.index("fragment: security")
        < text.index("fragment: core")
        < text.index("fragment: light")
    )
    assert 'LABEL io.factory.platform="linux/amd64"' in text
    assert "io.factory.build-key" in text


def test_render_is_byte_identical(tmp_path):
    assert render(tmp_path / "a").text == render(tmp_path / "b").text


def test_render_error_names_template_and_stage(tmp_path):
    # Validation renders every combination: the store is refused, naming the template's line.
    with pytest.raises(StoreError) as refused:
        render(tmp_path / "a", files={"templates/service.Dockerfile.j2": "FROM {{ bsae }}\n"})
    assert '"templates/service.Dockerfile.j2" line 1' in str(refused.value)
    assert "bsae" in str(refused.value)
    # At build time (a store that changed after validation) it is a render-stage error.
    with pytest.raises(StageError) as err:
        render_swapped(tmp_path / "b", "FROM {{ bsae }}\n")
    assert err.value.stage == "render"
    assert "service" in str(err.value) and "bsae" in str(err.value)


def render_swapped(tmp_path, template_text, platform=AMD64):
    """Render with the template's text replaced after validation (as if it changed since)."""
    store = load_store(write_store(tmp_path))
    rel = store.model.templates["service"].path
    files = dict(store.files)
    files[rel] = dataclasses.replace(files[rel], text=template_text)
    store = dataclasses.replace(store, files=files)
    inputs = combination_inputs(store, "llm_factory", platform, DIGEST_A)
    return render_dockerfile(store, inputs, build_key(inputs))


def test_render_sandbox_blocks_python_internals(tmp_path):
    evil = "FROM {{ base }}\nRUN echo {{ ''.__class__.__mro__[1].__subclasses__() }}\n"
    with pytest.raises(StoreError):
        render(tmp_path / "a", files={"templates/service.Dockerfile.j2": evil})
    with pytest.raises(StageError):
        render_swapped(tmp_path / "b", evil)


def test_render_refuses_a_dockerfile_that_escapes_the_base(tmp_path):
    with pytest.raises(StageError) as err:
        render_swapped(tmp_path, "# syntax=evil/frontend\nFROM {{ base }}\n")
    assert err.value.stage == "render"
    assert "line 1" in str(err.value) and "syntax" in str(err.value)
