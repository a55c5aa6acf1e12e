"""Hostile stores, options and environment: amplified reads, hard links, trailing slashes,
colliding build secrets, huge problem lists, unusable paths in the settings.

Every case runs the real CLI in-process (`validate`, `plan --json`, `render`) with a temporary data
dir and asserts a clear message naming the file and field (or the variable), exit code 1, no
traceback, nothing written, the store unchanged. The accepted cases (one file named through many
spellings) must validate, and quickly: each file is read once.
"""

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from factory.cli.main import main
from factory.store.load import load_store
from factory.store.named_files import MAX_FILE_BYTES, MAX_TOTAL_BYTES
from tests.unit.store_factory import write_store

COMMANDS = {
    "validate": ["validate"],
    "plan": ["plan", "--json"],
    "render": ["render", "--manifest-id", "llm_factory", "--platform", "linux/amd64"],
}


def invoke(args, tmp_path: Path, env: dict):
    data = tmp_path / "data"
    base = {"FACTORY_DATA_DIR": str(data), "DAGSTER_HOME": str(data / "dagster")}
    return CliRunner().invoke(main, args, env={**base, **env}, catch_exceptions=True)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def check_refused(result, tmp_path: Path, words: list[str]) -> None:
    output = result.output
    assert result.exit_code == 1, output[-2000:]
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in output and "RuntimeError" not in output
    for word in words:
        assert word in output, f"{word!r} not in: {output[-3000:]}"
    assert not (tmp_path / "data").exists(), "a refused command wrote to the data dir"


# --- stores: each builds a store under tmp_path, returns (path, words the message must hold) ---


def hard_link_outside(tmp_path: Path):
    path = write_store(tmp_path)
    outside = tmp_path / "secret.txt"
    outside.write_text("root:x:0:0\n")
    target = path.parent / "tests" / "smoke.sh"
    target.unlink()
    os.link(outside, target)
    return path, ['"tests/smoke.sh"', "hard links", "test_suites.smoke.path"]


def hard_link_inside(tmp_path: Path):
    path = write_store(tmp_path)
    os.link(path.parent / "tests" / "smoke.sh", path.parent / "tests" / "copy.sh")
    return path, ['"tests/smoke.sh"', "2 hard links"]


def trailing_slash(name: str, rel: str):
    def build(tmp_path: Path):
        def mutate(d):
            section, key = name.split(".")
            d[section][key]["path"] = rel

        return write_store(tmp_path, mutate), [json.dumps(rel), "trailing slash"]

    return build


def over_budget(tmp_path: Path):
    count = MAX_TOTAL_BYTES // MAX_FILE_BYTES + 2

    def mutate(d):
        d["modules"]["big"] = {f"1.0.{i}": {"path": f"big/{i}.Dockerfile"} for i in range(count)}

    path = write_store(tmp_path, mutate)
    (path.parent / "big").mkdir()
    line = "RUN true  " + "#" * 1000 + "\n"
    body = (line * (MAX_FILE_BYTES // len(line)))[: MAX_FILE_BYTES - 1]
    for i in range(count):
        (path.parent / "big" / f"{i}.Dockerfile").write_text(body)
    return path, ["bytes read from the store past", str(MAX_TOTAL_BYTES), "modules.big"]


def secrets(values: list[str], *words: str):
    def build(tmp_path: Path):
        def mutate(d):
            d["manifests"]["llm_factory"]["build_secrets"] = values

        return write_store(tmp_path, mutate), ["manifests.llm_factory.build_secrets", *words]

    return build


def many_problems(count: int):
    def build(tmp_path: Path):
        def mutate(d):
            for i in range(count):
                d["manifests"][f"m{i}"] = {
                    "template": "nosuch",
                    "base": "busybox",
                    "fragments": {"core": "0.1.0"},
                    "platforms": ["linux/amd64"],
                }

        return write_store(tmp_path, mutate), [f"{count} problems", f"and {count - 200} more"]

    return build


STORES = {
    "hard link to a file outside": hard_link_outside,
    "hard link inside the store": hard_link_inside,
    "trailing slash on a suite": trailing_slash("test_suites.smoke", "tests/smoke.sh/"),
    "trailing slash on a template": trailing_slash(
        "templates.service", "templates/service.Dockerfile.j2/"
    ),
    "trailing slash, dotted": trailing_slash("test_suites.http", "./tests/http.sh/."[:-1]),
    "trailing slash on a folder": trailing_slash("test_suites.http", "tests/"),
    "over the read budget": over_budget,
    "secret listed twice": secrets(["token", "token"], "listed twice"),
    "secrets a-b and a_b": secrets(["a-b", "a_b"], "FACTORY_SECRET_A_B", "both read"),
    "secrets x_1 and x-1": secrets(["x_1", "other", "x-1"], "FACTORY_SECRET_X_1"),
    "300 problems": many_problems(300),
    "20000 problems": many_problems(20_000),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("build", STORES.values(), ids=STORES.keys())
def test_hostile_store_is_refused(tmp_path, command, build):
    path, words = build(tmp_path)
    before = snapshot(path.parent)
    started = time.monotonic()
    result = invoke(COMMANDS[command], tmp_path, {"FACTORY_MANIFEST_STORE": str(path)})
    check_refused(result, tmp_path, [str(path), *words])
    assert time.monotonic() - started < 60
    # The problem list is capped: a few hundred lines at most, whatever the store.
    assert result.output.count("\n") < 260
    assert len(result.output) < 200_000
    assert snapshot(path.parent) == before


# --- the environment and options ------------------------------------------------------------


def loop(tmp_path: Path) -> str:
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    return str(tmp_path / "loop-a")


STORE_VAR = "FACTORY_MANIFEST_STORE"
# (what is wrong, the variable or option, its value or a function of a folder that makes it,
#  words the message holds besides the variable's or option's name)
BAD_SETTINGS = [
    ("empty", STORE_VAR, "", [f"{STORE_VAR} is empty"]),
    ("blank", STORE_VAR, "   ", [f"{STORE_VAR} is empty"]),
    ("~nosuchuser in", STORE_VAR, "~nosuchuser-factory/manifest.json", ["cannot expand '~'"]),
    ("loop in", STORE_VAR, loop, ["symlink loop"]),
    ("loop below", STORE_VAR, lambda t: loop(t) + "/manifest.json", ["symlink loop"]),
    ("~nosuchuser in", "FACTORY_DATA_DIR", "~nosuchuser-factory/data", ["cannot expand '~'"]),
    ("loop in", "FACTORY_DATA_DIR", loop, ["symlink loop"]),
    ("loop in", "--manifest-store", loop, ["symlink loop"]),
    ("empty", "--manifest-store", "", ["--manifest-store is empty"]),
    ("NaN", "FACTORY_RENDER_TIMEOUT_S", "nan", []),
    ("huge", "FACTORY_RENDER_TIMEOUT_S", "1e300", []),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [row[1:] for row in BAD_SETTINGS],
    ids=[f"{what} {setting}" for what, setting, *_ in BAD_SETTINGS],
)
def test_unusable_setting_is_a_message(tmp_path, command, setting, value, words):
    store = write_store(tmp_path)
    if callable(value):
        (tmp_path / "x").mkdir()
        value = value(tmp_path / "x")
    env, args = {STORE_VAR: str(store)}, []
    if setting.startswith("--"):
        args = [setting, value]
    else:
        env[setting] = value
    result = invoke([*COMMANDS[command], *args], tmp_path, env)
    check_refused(result, tmp_path, [setting, *words])


@pytest.mark.parametrize("command", ["records", "matrix", "status"])
def test_commands_without_a_store_option_also_explain_bad_settings(tmp_path, command):
    result = invoke([command], tmp_path, {"FACTORY_DATA_DIR": loop(tmp_path)})
    check_refused(result, tmp_path, ["FACTORY_DATA_DIR", "symlink loop"])


# --- accepted: one file under many names is read once -------------------------------------------


def spellings(count: int) -> list[str]:
    names = []
    for i in range(count):
        prefix = "./" * (i % 7) + "modules/" + "../modules/" * (i // 7)
        names.append(prefix + "core/0.1.0.Dockerfile")
    return names


def test_one_file_under_many_spellings_is_read_once(tmp_path):
    rels = spellings(300)

    def mutate(d):
        d["modules"]["core"] = {f"0.{i}.0": {"path": rel} for i, rel in enumerate(rels)}
        d["manifests"]["llm_factory"]["fragments"]["core"] = "0.1.0"
        d["manifests"]["web"]["fragments"]["core"] = "0.1.0"

    path = write_store(tmp_path, mutate)
    # A 1 MiB fragment: read 300 times it would be 300 MiB, past the 64 MiB budget.
    line = "RUN true  " + "#" * 1000 + "\n"
    big = (line * (MAX_FILE_BYTES // len(line)))[: MAX_FILE_BYTES - 1]
    (path.parent / "modules/core/0.1.0.Dockerfile").write_text(big)
    started = time.monotonic()
    store = load_store(path)
    assert time.monotonic() - started < 20
    texts = {id(store.files[rel].text) for rel in rels}
    assert len(texts) == 1, "the same file was read more than once"
    result = invoke(["validate"], tmp_path, {"FACTORY_MANIFEST_STORE": str(path)})
    assert result.exit_code == 0, result.output[-2000:]


def test_empty_store_variable_does_not_fall_back_to_the_example(tmp_path):
    result = invoke(["validate"], tmp_path, {"FACTORY_MANIFEST_STORE": ""})
    assert result.exit_code == 1
    assert "control_plane" not in result.output
