"""What the `load_store` test modules share: a bad store must be a StoreError whose problems name
the file and the field path, and the table rows (what to break, where the problem is reported,
what the message says) their cases are written in.

Each check also makes sure that nothing but StoreError escapes and that every problem names the
store file.
"""

import json
import re
from pathlib import Path

import pytest

from factory.errors import Problem, StoreError
from factory.store.load import load_store


def problems_of(path: Path) -> list[Problem]:
    """The problems `load_store` reports; fails the test if it loads or raises anything else."""
    with pytest.raises(StoreError) as exc:
        load_store(path)
    problems = exc.value.problems
    assert problems, "a StoreError always lists at least one problem"
    for problem in problems:
        assert problem.file == str(path), problem
        assert "\n" not in problem.location, "a location is one line"
        assert str(problem).startswith(str(path))
    return problems


def only_problem(path: Path) -> Problem:
    problems = problems_of(path)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def assert_one(path: Path, location: str, *fragments: str) -> Problem:
    problem = only_problem(path)
    assert problem.location == location, str(problem)
    for fragment in fragments:
        assert fragment in problem.message, str(problem)
    return problem


def key_location(*parts: str) -> str:
    """What the report shows for a path of keys: plain words dotted, anything else quoted."""
    out = ""
    for part in parts:
        if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def holder(data, keys):
    """The container in which keys[-1] of the path data[k1][k2]... is set or deleted."""
    for key in keys[:-1]:
        data = data[key]
    return data


def setter(*keys, value):
    """A mutate function that sets data[k1][k2]... = value."""

    def mutate(data):
        holder(data, keys)[keys[-1]] = value

    return mutate


def deleter(*keys):
    def mutate(data):
        del holder(data, keys)[keys[-1]]

    return mutate


def values_at(keys: tuple[str, ...], *cases: tuple, at: str | None = None) -> list[tuple]:
    """Table rows (mutate, location, message), one per (value, message) case: the value set at
    `keys`, its problem reported at `at`, or at those keys when not given."""
    location = at or key_location(*keys)
    return [(setter(*keys, value=value), location, message) for value, message in cases]


def missing(*keys: str) -> tuple:
    """The table row of a required field deleted."""
    return deleter(*keys), key_location(*keys), "required field is missing"
