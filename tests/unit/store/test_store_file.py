"""`load_store` on the store's JSON file itself: malformed or unusable JSON, duplicate keys,
the size limit, and a store path that is missing, a directory, a symlink loop or a FIFO."""

import json
import os
from pathlib import Path

import pytest

import factory.store.load as store_module
from factory.store.load import MAX_STORE_BYTES, load_store
from tests.unit.store.store_problems import assert_one, problems_of
from tests.unit.store_factory import valid_store_dict, write_store

# --- the JSON itself --------------------------------------------------------------------------


def write_raw(tmp_path: Path, content: bytes | str) -> Path:
    path = write_store(tmp_path)  # the named files, so only the JSON is at fault
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


VALID_JSON = json.dumps(valid_store_dict(), indent=2)


IDS = {"ids": lambda v: repr(v)[:40] if isinstance(v, str | bytes) else None}


@pytest.mark.parametrize(
    ("content", "location", "message"),
    [
        (
            '{"schema_version": 1,\n  "bases": {,}\n}',
            "line 2 column 13",
            "malformed JSON: Expecting property name enclosed in double quotes",
        ),
        ('{"schema_version": 1,}', "line 1 column 22", "malformed JSON"),
        ('{"schema_version": 1', "line 1 column 21", "malformed JSON"),
        ("{'schema_version': 1}", "line 1 column 2", "malformed JSON"),
        ('{"schema_version": 1} trailing', "line 1 column 23", "malformed JSON: Extra data"),
        ("\ufeff" + VALID_JSON, "line 1 column 1", "malformed JSON: Unexpected UTF-8 BOM"),
        (
            b'{"schema_version": 1,\n "x": "caf\xe9"}',
            "line 2 column 11",
            "not valid UTF-8 (byte 0xe9 at offset 32)",
        ),
        (b"\xff\xfe{\x00}\x00", "line 1 column 1", "not valid UTF-8 (byte 0xff at offset 0)"),
    ],
    **IDS,
)
def test_malformed_json_at_a_position(tmp_path, content, location, message):
    assert_one(write_raw(tmp_path, content), location, message)


NESTED_TOO_DEEPLY = "malformed JSON: arrays or objects are nested too deeply"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("  \n", "the file is empty"),
        ("[]", "the store must be a JSON object with schema_version 1, not an array"),
        ("[" + VALID_JSON + "]", "must be a JSON object with schema_version 1, not an array"),
        ('"store"', 'not the string "store"'),
        ("1", "not the number 1"),
        ("null", "not null"),
        ("[" * 100_000, NESTED_TOO_DEEPLY),
        ('{"a":' * 100_000, NESTED_TOO_DEEPLY),
        ("[" * 100_000 + "]" * 100_000, NESTED_TOO_DEEPLY),
        ('{"schema_version": NaN}', "malformed JSON: NaN is not valid JSON"),
        ('{"schema_version": -Infinity}', "malformed JSON: -Infinity is not valid JSON"),
        (
            '{"schema_version": 1' + "0" * 5000 + "}",
            "malformed JSON: a number has 5001 digits (at most 64)",
        ),
    ],
    **IDS,
)
def test_unusable_json_is_a_problem_of_the_whole_file(tmp_path, content, message):
    assert_one(write_raw(tmp_path, content), "", message)


def test_deep_nesting_inside_a_valid_store_is_a_problem_not_a_crash(tmp_path):
    # Deep enough to parse, then handed to validation and to the messages.
    deep = "[" * 500 + "]" * 500
    text = VALID_JSON.replace('"priority": "high"', f'"priority": {deep}', 1)
    assert text != VALID_JSON
    problems = problems_of(write_raw(tmp_path, text))
    assert [p.location for p in problems] == ["manifests.web.priority"]


@pytest.mark.parametrize(
    ("old", "new", "location"),
    [
        ('"schema_version": 1,', '"schema_version": 1, "schema_version": 1,', "schema_version"),
        (
            '"core": "0.1.0",',
            '"core": "0.1.0", "core": "0.1.0",',
            "manifests.llm_factory.fragments.core",
        ),
        ('"web": {', '"web": {"priority": "normal", ', "manifests.web.priority"),
        ('"smoke": {', '"smoke": {"timeout_s": 5, ', "test_suites.smoke.timeout_s"),
    ],
)
def test_duplicate_keys(tmp_path, old, new, location):
    compact = json.dumps(valid_store_dict())
    assert old in compact
    path = write_raw(tmp_path, compact.replace(old, new, 1))
    key = location.rsplit(".", 1)[-1]
    assert_one(path, location, f'duplicate key "{key}"', "may appear once")


def test_duplicate_keys_are_all_listed_with_other_problems(tmp_path):
    compact = json.dumps(valid_store_dict())
    compact = compact.replace('"schema_version": 1,', '"schema_version": 1, "schema_version": 1,')
    compact = compact.replace('"priority": "high"', '"priority": "high", "priority": "top"')
    problems = problems_of(write_raw(tmp_path, compact))
    assert [(p.location, p.message.split(":")[0]) for p in problems] == [
        ("manifests.web.priority", 'duplicate key "priority"'),
        ("schema_version", 'duplicate key "schema_version"'),
        ("manifests.web.priority", "\"top\" is not allowed; expected 'normal' or 'high'"),
    ]


def test_store_over_max_store_bytes(tmp_path):
    padding = " " * (MAX_STORE_BYTES + 1 - len(VALID_JSON))
    path = write_raw(tmp_path, VALID_JSON + padding)
    assert path.stat().st_size == MAX_STORE_BYTES + 1
    assert_one(path, "", f"the store is {MAX_STORE_BYTES + 1} bytes; at most {MAX_STORE_BYTES}")


def test_store_at_max_store_bytes_is_read(tmp_path):
    padding = " " * (MAX_STORE_BYTES - len(VALID_JSON))
    path = write_raw(tmp_path, VALID_JSON + padding)
    assert path.stat().st_size == MAX_STORE_BYTES
    assert load_store(path).model.schema_version == 1


def test_store_limit_is_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "MAX_STORE_BYTES", 100)
    assert_one(write_store(tmp_path), "", "at most 100 are read")


# --- the store path ---------------------------------------------------------------------------


def test_store_missing(tmp_path):
    path = tmp_path / "nope.json"
    assert_one(path, "", "no such file (set FACTORY_MANIFEST_STORE or pass --manifest-store)")


def test_store_is_a_directory(tmp_path):
    path = write_store(tmp_path).parent
    assert_one(path, "", "is a directory; give the store's JSON file")


def test_store_is_a_symlink_loop(tmp_path):
    path = tmp_path / "loop.json"
    path.symlink_to(path)
    assert_one(path, "", "cannot be read: Too many levels of symbolic links")


def test_store_is_a_fifo(tmp_path):
    path = tmp_path / "fifo.json"
    os.mkfifo(path)
    assert_one(path, "", "is not a regular file")
