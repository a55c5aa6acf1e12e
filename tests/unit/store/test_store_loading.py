"""`load_store` on a valid store: the LoadedStore it returns (its files, their sha256, the
manifests and their platform combinations and partition keys), the store's sha256, and the paths
and symlinks that stay inside the store's folder."""

import hashlib
import os
import re

import pytest

from factory.platforms import BY_NAME, BY_SLUG
from factory.store.load import LoadedStore, load_store
from factory.store.named_files import StoreFile
from tests.unit.store.store_problems import problems_of, setter
from tests.unit.store_factory import FILES, write_store


def test_valid_store_loads(tmp_path):
    path = write_store(tmp_path)
    loaded = load_store(path)
    assert isinstance(loaded, LoadedStore)
    assert loaded.path == path
    assert loaded.root == path.parent
    assert set(loaded.files) == set(FILES)
    for rel, text in FILES.items():
        file = loaded.files[rel]
        assert isinstance(file, StoreFile)
        assert file.rel_path == rel
        assert file.text == text
        assert file.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert loaded.template_file("service").rel_path == "templates/service.Dockerfile.j2"
    assert loaded.module_file("core", "0.2.0").text == FILES["modules/core/0.2.0.Dockerfile"]
    assert loaded.suite_file("http").rel_path == "tests/http.sh"
    assert loaded.manifest("web").priority == "high"
    assert re.fullmatch(r"[0-9a-f]{64}", loaded.sha256)


def test_load_store_accepts_a_string_path(tmp_path):
    assert load_store(str(write_store(tmp_path))).model.schema_version == 1


def test_unknown_manifest_id_names_the_known_ones(tmp_path):
    loaded = load_store(write_store(tmp_path))
    with pytest.raises(KeyError, match=r"unknown manifest id 'nope'.*known: llm_factory, web"):
        loaded.manifest("nope")


def test_combinations_in_stable_order(tmp_path):
    loaded = load_store(write_store(tmp_path))
    amd64, arm64, gpu = BY_NAME["linux/amd64"], BY_NAME["linux/arm64"], BY_NAME["linux/amd64+gpu"]
    assert loaded.combinations() == [
        ("llm_factory", amd64),
        ("llm_factory", arm64),
        ("llm_factory", gpu),
        ("web", amd64),
    ]
    assert loaded.combinations(manifest_ids=["web"]) == [("web", amd64)]
    assert loaded.combinations(platforms=["linux/amd64"]) == [
        ("llm_factory", amd64),
        ("web", amd64),
    ]
    assert loaded.combinations(platforms=["linux_amd64_gpu"]) == [("llm_factory", gpu)]
    assert loaded.combinations(manifest_ids=["web"], platforms=["linux/arm64"]) == []
    assert loaded.combinations(manifest_ids=["nope"]) == []
    assert loaded.combinations(manifest_ids=[], platforms=[]) == loaded.combinations()


def test_partition_keys_per_platform(tmp_path):
    loaded = load_store(write_store(tmp_path))
    assert loaded.partition_keys(BY_SLUG["linux_amd64"]) == ["llm_factory", "web"]
    assert loaded.partition_keys(BY_SLUG["linux_arm64"]) == ["llm_factory"]
    assert loaded.partition_keys(BY_SLUG["linux_amd64_gpu"]) == ["llm_factory"]


def test_partition_keys_are_the_combinations(tmp_path):
    loaded = load_store(write_store(tmp_path))
    for platform in BY_NAME.values():
        expected = [mid for mid, p in loaded.combinations() if p == platform]
        assert loaded.partition_keys(platform) == sorted(expected)


def test_gpu_platform_runs_on_an_amd64_base(tmp_path):
    path = write_store(
        tmp_path, setter("manifests", "web", "platforms", value=["linux/amd64", "linux/amd64+gpu"])
    )
    assert load_store(path).partition_keys(BY_SLUG["linux_amd64_gpu"]) == ["llm_factory", "web"]


def test_store_without_manifests_is_valid(tmp_path):
    path = write_store(tmp_path, setter("manifests", value={}))
    loaded = load_store(path)
    assert loaded.combinations() == []
    assert loaded.partition_keys(BY_SLUG["linux_amd64"]) == []


def test_sha256_is_stable_and_follows_named_files(tmp_path):
    path = write_store(tmp_path)
    root = path.parent
    first = load_store(path).sha256
    assert load_store(path).sha256 == first, "same store, same sha256"

    os.utime(root / "tests/smoke.sh", (1, 1))
    (root / "notes.txt").write_text("not named by the store")
    assert load_store(path).sha256 == first, "mtimes and unnamed files do not count"

    fragment = root / "modules/core/0.2.0.Dockerfile"
    original = fragment.read_text()
    fragment.write_text(original + "RUN true\n")
    changed = load_store(path)
    assert changed.sha256 != first, "a named file's content changes the store's sha256"
    assert (
        changed.module_file("core", "0.2.0").sha256
        != load_store(path).module_file("core", "0.1.0").sha256
    )

    fragment.write_text(original)
    assert load_store(path).sha256 == first, "and changing it back restores it"

    (root / "tests/http.sh").write_text("#!/bin/sh\nexit 1\n")
    assert load_store(path).sha256 != first, "a test suite counts too"


def test_sha256_follows_the_json(tmp_path):
    first = load_store(write_store(tmp_path / "a")).sha256
    assert load_store(write_store(tmp_path / "b")).sha256 == first, "independent of the folder"
    changed = write_store(tmp_path / "c", setter("test_suites", "smoke", "timeout_s", value=61))
    assert load_store(changed).sha256 != first


def test_named_path_with_dotdot_that_stays_inside_is_fine(tmp_path):
    path = write_store(
        tmp_path,
        setter("templates", "service", "path", value="modules/../templates/service.Dockerfile.j2"),
    )
    assert (
        load_store(path).template_file("service").text == FILES["templates/service.Dockerfile.j2"]
    )


def test_symlink_inside_the_store_is_fine(tmp_path):
    path = write_store(tmp_path, setter("test_suites", "http", "path", value="tests/alias.sh"))
    (path.parent / "tests/alias.sh").symlink_to("smoke.sh")
    assert load_store(path).suite_file("http").text == FILES["tests/smoke.sh"]


def test_store_reached_through_a_symlink(tmp_path):
    path = write_store(tmp_path)
    link = tmp_path / "link.json"
    link.symlink_to(path)
    # Files are looked up beside the path given (here tmp_path), where there are none.
    problems = problems_of(link)
    assert {p.message.split('"')[1] for p in problems} == set(FILES)
