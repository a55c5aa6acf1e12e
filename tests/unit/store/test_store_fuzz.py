"""`load_store` fuzzed: whatever is in the JSON, the answer is a LoadedStore or a well-formed
StoreError, never another exception."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.errors import StoreError
from factory.store.load import load_store
from tests.unit.store.store_problems import holder
from tests.unit.store_factory import valid_store_dict, write_store

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, (*prefix, i))


STORE_PATHS = list(_paths(valid_store_dict()))


def _load_and_check(path: Path) -> None:
    """Load; anything but a LoadedStore or a well-formed StoreError fails the test."""
    error: StoreError | None = None
    try:
        load_store(path)
    except StoreError as exc:
        error = exc
    if error is None:
        return
    assert error.problems
    for problem in error.problems:
        assert problem.file == str(path)
        assert "\n" not in problem.location
        str(problem).encode("utf-8")  # printable


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("fuzz"))


@settings(max_examples=300, deadline=None)
@given(
    where=st.sampled_from(STORE_PATHS),
    value=JSON_VALUES,
    new_key=st.one_of(st.none(), st.text(max_size=12)),
)
def test_fuzz_replace_any_value(fuzz_store, where, value, new_key):
    data = valid_store_dict()
    if not where:
        data = value
    else:
        target = holder(data, where)
        if new_key is not None and isinstance(target, dict):
            target[new_key] = value
        else:
            target[where[-1]] = value
    fuzz_store.write_text(json.dumps(data))
    _load_and_check(fuzz_store)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzz_raw_bytes(fuzz_store, raw):
    fuzz_store.write_bytes(raw)
    _load_and_check(fuzz_store)
