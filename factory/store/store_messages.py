"""A store's problems in words: field paths, short descriptions of values, and schema errors.

Owns how a problem names where it is (`manifests["a/b"].platforms[1]`, always one printable line),
how a value from the store is shown in a message (never the repr of a big or deep container), and
the messages pydantic's validation errors of the manifest store schema become.
"""

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from factory.errors import Problem
from factory.store.manifest import (
    ID_PATTERN,
    IMAGE_PATTERN,
    PATH_PATTERN,
    SECTION_MODELS,
    TAG_PATTERN,
    VERSION_PATTERN,
    ManifestStore,
    ModuleVersion,
)

_ID_RULE = (
    "lowercase letters, digits, '_' and '-', 1 to 63 characters, starting with a letter or digit"
)
_VERSION_RULE = "semver-like MAJOR.MINOR.PATCH with optional -prerelease/+build, e.g. 1.2.3"
_PATTERN_RULES = {
    ID_PATTERN: f"is not a valid id ({_ID_RULE})",
    VERSION_PATTERN: f"is not a valid version ({_VERSION_RULE})",
    IMAGE_PATTERN: "is not a valid image repository (host[:port]/path with a lowercase path)",
    TAG_PATTERN: "is not a valid tag (letters, digits, '_', '.', '-'; at most 128)",
    PATH_PATTERN: "is not a valid path (it contains a control character)",
}
_TYPE_NAMES = {
    "int_type": "an integer",
    "string_type": "a string",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "an array",
    "bool_type": "true or false",
}
# The model whose fields an object at a given location may have (for "unknown field" messages).


_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def location(*parts: str | int) -> str:
    """A field path: `manifests.llm_factory.fragments.core`, `manifests.x.platforms[1]`.

    Keys that are not plain words (`a/b`, `../x`, `a b`, a newline, ...) are shown quoted and
    escaped, `manifests["a/b"]`, so a location is always one printable line.
    """
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_SEGMENT.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def describe(value: Any) -> str:
    """A short, safe description of a JSON value (never the repr of a big or deep container)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = json.dumps(value[:80]) + ("..." if len(value) > 80 else "")
        return f"the string {shown}"
    if isinstance(value, list):
        return f"an array of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def short(value: Any) -> str:
    """A string quoted (first 80 characters), anything else described."""
    if isinstance(value, str):
        return json.dumps(value[:80]) + ("..." if len(value) > 80 else "")
    return describe(value)


def _allowed_fields(loc: tuple) -> str:
    """The fields the object at `loc` may have, for an "unknown field" message."""
    model: type[BaseModel] | None = None
    if not loc:
        model = ManifestStore
    elif len(loc) == 2 and loc[0] in SECTION_MODELS:
        model = SECTION_MODELS[loc[0]]
    elif len(loc) == 3 and loc[0] == "modules":
        model = ModuleVersion
    return f" (allowed: {', '.join(model.model_fields)})" if model else ""


def pydantic_problems(file: str, exc: ValidationError) -> list[Problem]:
    """One problem for each error pydantic found in the store, in words a store editor reads."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        value = err.get("input")
        ctx = err.get("ctx") or {}
        # pydantic reports a bad dict key at (..., key, "[key]") with the key as input.
        is_key = (
            len(loc) >= 2
            and loc[-1] == "[key]"
            and value == loc[-2]
            and kind not in ("missing", "extra_forbidden")
        )
        if is_key:
            loc = loc[:-1]
        what = f"the key {short(value)}" if is_key else short(value)
        if kind == "extra_forbidden":
            message = f"unknown field {json.dumps(loc[-1])}{_allowed_fields(loc[:-1])}"
        elif kind == "missing":
            message = "required field is missing"
        elif kind == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERN_RULES:
            message = f"{what} {_PATTERN_RULES[ctx['pattern']]}"
        elif kind == "string_pattern_mismatch":
            message = f"{what} does not match {ctx.get('pattern')}"
        elif kind == "string_unicode":
            message = f"{what} is not valid text (it contains an unpaired \\ud800-\\udfff escape)"
        elif kind == "literal_error":
            message = f"{what} is not allowed; expected {ctx.get('expected')}"
        elif kind in _TYPE_NAMES:
            message = f"expected {_TYPE_NAMES[kind]}, got {describe(value)}"
        elif kind == "too_short":
            message = f"must not be empty (got {describe(value)})"
        elif kind == "schema_version":
            message = err["msg"]
        else:
            message = f"{err['msg']} (got {describe(value)})"
        problems.append(Problem(file, location(*loc), message))
    return problems
