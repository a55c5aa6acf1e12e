"""The store's JSON parsed strictly: duplicate keys found, huge numbers and NaN refused.

Owns turning the store file's bytes into JSON values: UTF-8 checked, integers longer than
`MAX_INT_DIGITS` digits and `NaN`/`Infinity` refused before Python converts them, nesting too deep
caught, every object with a key written twice reported at its field path (the parser would keep
only one value), and a problem that stops the load (`fail`) raised as a `StoreError`.
"""

import json
from typing import Any, NoReturn

from factory.errors import Problem, StoreError
from factory.store.store_messages import describe, location

# JSON integers longer than this are refused before Python converts them (no value in the store
# needs more than a handful of digits).
MAX_INT_DIGITS = 64


class _Object(dict):
    """A JSON object that remembers the keys it saw twice (the parser keeps the last value)."""

    duplicates: tuple[str, ...] = ()


class _BadNumber(ValueError):
    pass


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        msg = f"a number has {len(digits)} digits (at most {MAX_INT_DIGITS})"
        raise _BadNumber(msg)
    return int(digits)


def _parse_constant(name: str) -> float:
    msg = f"{name} is not valid JSON (write a number or a string)"
    raise _BadNumber(msg)


def line_column(data: bytes, offset: int) -> str:
    """`line L column C` of a byte offset, for a message."""
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line} column {column}"


def fail(file: str, message: str, where: str = "") -> NoReturn:
    """Stop with one problem (the store cannot be read or parsed, nothing more can be checked)."""
    raise StoreError([Problem(file, where, message)]) from None


def parse_store_json(raw: bytes, file: str) -> tuple[Any, list[Problem]]:
    """The parsed JSON and the problems that still let validation go on (duplicate keys)."""

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = line_column(raw, exc.start)
        fail(file, f"not valid UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start})", where)
    if not text.strip():
        fail(file, "the file is empty; a store is a JSON object with schema_version 1")

    with_duplicates: list[_Object] = []

    def make_object(pairs: list[tuple[str, Any]]) -> _Object:
        obj = _Object(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            dups = []
            for key, _ in pairs:
                if key in seen and key not in dups:
                    dups.append(key)
                seen.add(key)
            obj.duplicates = tuple(dups)
            with_duplicates.append(obj)
        return obj

    try:
        data = json.loads(
            text,
            object_pairs_hook=make_object,
            parse_int=_parse_int,
            parse_constant=_parse_constant,
        )
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        fail(file, f"malformed JSON: {exc.msg}", where)
    except _BadNumber as exc:
        fail(file, f"malformed JSON: {exc}")
    except RecursionError:
        fail(file, "malformed JSON: arrays or objects are nested too deeply")
    except ValueError as exc:  # anything else the parser refuses
        fail(file, f"malformed JSON: {exc}")
    if not isinstance(data, dict):
        what = describe(data)
        fail(file, f"the store must be a JSON object with schema_version 1, not {what}")
    return data, _duplicate_problems(file, data, with_duplicates)


def _duplicate_problems(file: str, data: Any, objects: list[_Object]) -> list[Problem]:
    """Where each object with a duplicate key sits (found by a walk, only when there are any)."""
    if not objects:
        return []
    wanted = {id(obj) for obj in objects}
    problems = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            if id(value) in wanted:
                for key in value.duplicates:  # type: ignore[attr-defined]
                    problems.append(
                        Problem(
                            file,
                            location(*path, key),
                            f"duplicate key {json.dumps(key)}: each key may appear once in an "
                            "object (a JSON parser keeps only one of the values)",
                        )
                    )
            stack.extend((v, (*path, k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(value))
    return sorted(problems, key=lambda p: p.location)
