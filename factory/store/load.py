"""Loading and validating a manifest store: the JSON file and every file it names.

`load_store` either returns a `LoadedStore` (the models, each named file's text and sha256) or
raises `StoreError` listing every problem with its file and field path. Nothing here writes.

Whatever the input (malformed JSON, wrong types, a path through a symlink, a 10^5-deep array), the
only exception `load_store` raises is `StoreError`. Problems are collected, not stopped at: schema
problems, unknown references and unreadable files of one store are reported together.
"""

import errno
import hashlib
import json
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from pydantic import BaseModel, ValidationError

from factory.errors import Problem, StoreError
from factory.platforms import BY_NAME, BY_SLUG, Platform
from factory.store.manifest import (
    ID_PATTERN,
    ID_RE,
    IMAGE_PATTERN,
    PATH_PATTERN,
    TAG_PATTERN,
    VERSION_PATTERN,
    VERSION_RE,
    Base,
    Manifest,
    ManifestStore,
    ModuleVersion,
    Template,
    TestSuite,
)

SECRET_ENV_PREFIX = "FACTORY_SECRET_"


def secret_env_name(secret_id: str) -> str:
    """The environment variable a build secret's value comes from."""
    return SECRET_ENV_PREFIX + secret_id.upper().replace("-", "_")


# A store of 10,000 manifests is about 3 MB; anything far past that is a mistake or an attack.
MAX_STORE_BYTES = 8 * 1024 * 1024
# Templates, fragments and test suites are short text files.
MAX_FILE_BYTES = 1024 * 1024
# Everything one load reads (the JSON and every distinct file it names, each counted once).
MAX_TOTAL_BYTES = 64 * 1024 * 1024
# JSON integers longer than this are refused before Python converts them (no value in the store
# needs more than a handful of digits).
_MAX_INT_DIGITS = 64

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
_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "bases": Base,
    "templates": Template,
    "test_suites": TestSuite,
    "manifests": Manifest,
}


@dataclass(frozen=True)
class StoreFile:
    """A file the store names, read and hashed."""

    rel_path: str
    text: str
    sha256: str


@dataclass(frozen=True)
class LoadedStore:
    """A valid manifest store with every file it names."""

    path: Path
    model: ManifestStore
    files: dict[str, StoreFile]
    sha256: str  # of the JSON bytes and every named file: changes when anything in the store does

    @property
    def root(self) -> Path:
        return self.path.parent

    def manifest(self, manifest_id: str) -> Manifest:
        try:
            return self.model.manifests[manifest_id]
        except KeyError:
            known = ", ".join(sorted(self.model.manifests)) or "none"
            msg = f"unknown manifest id {manifest_id!r} in {self.path} (known: {known})"
            raise KeyError(msg) from None

    def template_file(self, name: str) -> StoreFile:
        return self.files[self.model.templates[name].path]

    def module_file(self, name: str, version: str) -> StoreFile:
        return self.files[self.model.modules[name][version].path]

    def suite_file(self, name: str) -> StoreFile:
        return self.files[self.model.test_suites[name].path]

    def combinations(
        self, *, manifest_ids: list[str] | None = None, platforms: list[str] | None = None
    ) -> list[tuple[str, Platform]]:
        """Every (manifest id, platform) the store lists, in a stable order.

        `manifest_ids` and `platforms` (names like `linux/arm64` or slugs like `linux_arm64`)
        filter; None or empty means no filter. Ids or platforms the store does not list select
        nothing.
        """
        wanted_ids = set(manifest_ids) if manifest_ids else None
        wanted_platforms = None
        if platforms:
            wanted_platforms = {BY_SLUG[p].name if p in BY_SLUG else p for p in platforms}
        out = []
        for manifest_id in sorted(self.model.manifests):
            if wanted_ids is not None and manifest_id not in wanted_ids:
                continue
            for name in self.model.manifests[manifest_id].platforms:
                if wanted_platforms is not None and name not in wanted_platforms:
                    continue
                out.append((manifest_id, BY_NAME[name]))
        return out

    def partition_keys(self, platform: Platform) -> list[str]:
        """The manifest ids that list `platform`: the keys of its dynamic partitions."""
        return sorted(
            mid for mid, m in self.model.manifests.items() if platform.name in m.platforms
        )


# --- locations and values in messages ---------------------------------------------------------

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


def _describe(value: Any) -> str:
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


def _short(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value[:80]) + ("..." if len(value) > 80 else "")
    return _describe(value)


# --- reading and parsing the JSON -------------------------------------------------------------


class _Object(dict):
    """A JSON object that remembers the keys it saw twice (the parser keeps the last value)."""

    duplicates: tuple[str, ...] = ()


class _BadNumber(ValueError):
    pass


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > _MAX_INT_DIGITS:
        msg = f"a number has {len(digits)} digits (at most {_MAX_INT_DIGITS})"
        raise _BadNumber(msg)
    return int(digits)


def _parse_constant(name: str) -> float:
    msg = f"{name} is not valid JSON (write a number or a string)"
    raise _BadNumber(msg)


def _line_column(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line} column {column}"


def _fail(file: str, message: str, where: str = "") -> NoReturn:
    """Stop with one problem (the store cannot be read or parsed, nothing more can be checked)."""
    raise StoreError([Problem(file, where, message)]) from None


def _read_store_bytes(path: Path, file: str) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        msg = "no such file (set FACTORY_MANIFEST_STORE or pass --manifest-store)"
        _fail(file, msg)
    except OSError as exc:
        _fail(file, f"cannot be read: {exc.strerror or exc}")
    if stat.S_ISDIR(st.st_mode):
        msg = "is a directory; give the store's JSON file (e.g. control_plane/data/manifest.json)"
        _fail(file, msg)
    if not stat.S_ISREG(st.st_mode):
        _fail(file, "is not a regular file")
    if st.st_size > MAX_STORE_BYTES:
        _fail(file, f"the store is {st.st_size} bytes; at most {MAX_STORE_BYTES} are read")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_STORE_BYTES + 1)
    except OSError as exc:
        _fail(file, f"cannot be read: {exc.strerror or exc}")
    if len(raw) > MAX_STORE_BYTES:
        _fail(
            file, f"the store is over {MAX_STORE_BYTES} bytes; at most {MAX_STORE_BYTES} are read"
        )
    return raw


def _parse_store_json(raw: bytes, file: str) -> tuple[Any, list[Problem]]:
    """The parsed JSON and the problems that still let validation go on (duplicate keys)."""

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = _line_column(raw, exc.start)
        _fail(file, f"not valid UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start})", where)
    if not text.strip():
        _fail(file, "the file is empty; a store is a JSON object with schema_version 1")

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
        _fail(file, f"malformed JSON: {exc.msg}", where)
    except _BadNumber as exc:
        _fail(file, f"malformed JSON: {exc}")
    except RecursionError:
        _fail(file, "malformed JSON: arrays or objects are nested too deeply")
    except ValueError as exc:  # anything else the parser refuses
        _fail(file, f"malformed JSON: {exc}")
    if not isinstance(data, dict):
        what = _describe(data)
        _fail(file, f"the store must be a JSON object with schema_version 1, not {what}")
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


# --- schema problems --------------------------------------------------------------------------


def _allowed_fields(loc: tuple) -> str:
    """The fields the object at `loc` may have, for an "unknown field" message."""
    model: type[BaseModel] | None = None
    if not loc:
        model = ManifestStore
    elif len(loc) == 2 and loc[0] in _SECTION_MODELS:
        model = _SECTION_MODELS[loc[0]]
    elif len(loc) == 3 and loc[0] == "modules":
        model = ModuleVersion
    return f" (allowed: {', '.join(model.model_fields)})" if model else ""


def _pydantic_problems(file: str, exc: ValidationError) -> list[Problem]:
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
        what = f"the key {_short(value)}" if is_key else _short(value)
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
            message = f"expected {_TYPE_NAMES[kind]}, got {_describe(value)}"
        elif kind == "too_short":
            message = f"must not be empty (got {_describe(value)})"
        elif kind == "schema_version":
            message = err["msg"]
        else:
            message = f"{err['msg']} (got {_describe(value)})"
        problems.append(Problem(file, location(*loc), message))
    return problems


# --- what is in the store, even when parts of it are invalid -------------------------------------


@dataclass
class _View:
    """Every entry the store has, by key, with its model or None when the entry is invalid.

    A section is None when it is not an object at all: references into it are not checked (its
    own problem is already reported), so one mistake does not cascade into many.
    """

    bases: dict[str, Base | None] | None = field(default_factory=dict)
    templates: dict[str, Template | None] | None = field(default_factory=dict)
    modules: dict[str, dict[str, ModuleVersion | None] | None] | None = field(default_factory=dict)
    test_suites: dict[str, TestSuite | None] | None = field(default_factory=dict)
    manifests: dict[str, Manifest | None] | None = field(default_factory=dict)

    @classmethod
    def of_model(cls, model: ManifestStore) -> "_View":
        return cls(
            bases=dict(model.bases),
            templates=dict(model.templates),
            modules={name: dict(versions) for name, versions in model.modules.items()},
            test_suites=dict(model.test_suites),
            manifests=dict(model.manifests),
        )

    @classmethod
    def of_raw(cls, data: dict) -> "_View":
        def entries(section: str, model: type[BaseModel], key_re: re.Pattern = ID_RE) -> Any:
            raw = data.get(section, {})
            if not isinstance(raw, dict):
                return None
            return {key: _valid_or_none(model, key_re, key, value) for key, value in raw.items()}

        modules: dict[str, dict[str, ModuleVersion | None] | None] | None = None
        raw_modules = data.get("modules", {})
        if isinstance(raw_modules, dict):
            modules = {}
            for name, versions in raw_modules.items():
                if not isinstance(versions, dict) or not ID_RE.match(name):
                    modules[name] = None
                    continue
                modules[name] = {
                    v: _valid_or_none(ModuleVersion, VERSION_RE, v, entry)
                    for v, entry in versions.items()
                }
        return cls(
            bases=entries("bases", Base),
            templates=entries("templates", Template),
            modules=modules,
            test_suites=entries("test_suites", TestSuite),
            manifests=entries("manifests", Manifest),
        )


def _valid_or_none(model: type[BaseModel], key_re: re.Pattern, key: str, value: Any) -> Any:
    if not key_re.match(key):
        return None
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _known(names: Any) -> str:
    shown = sorted(names)
    text = ", ".join(shown[:20]) + (f", ... ({len(shown)} in all)" if len(shown) > 20 else "")
    return text or "none"


def _cross_reference_problems(file: str, view: _View) -> list[Problem]:
    problems = []

    def add(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(Problem(file, location(*loc), message))

    for mid, m in (view.manifests or {}).items():
        if m is None:
            continue
        at = ("manifests", mid)
        if view.templates is not None and m.template not in view.templates:
            known = _known(view.templates)
            add((*at, "template"), f"unknown template {_short(m.template)} (known: {known})")
        base = None
        if view.bases is not None:
            if m.base not in view.bases:
                known = _known(view.bases)
                add((*at, "base"), f"unknown base {_short(m.base)} (known: {known})")
            base = view.bases.get(m.base)
        for name, version in m.fragments.items() if view.modules is not None else ():
            if name not in view.modules:
                known = _known(view.modules)
                add((*at, "fragments", name), f"unknown module {_short(name)} (known: {known})")
                continue
            versions = view.modules[name]
            if versions is not None and version not in versions:
                known = _known(versions)
                add(
                    (*at, "fragments", name),
                    f"unknown version {_short(version)} of module {_short(name)} (known: {known})",
                )
        for i, suite in enumerate(m.tests):
            if view.test_suites is not None and suite not in view.test_suites:
                known = _known(view.test_suites)
                add((*at, "tests", i), f"unknown test suite {_short(suite)} (known: {known})")
            if suite in m.tests[:i]:
                add((*at, "tests", i), f"test suite {_short(suite)} is listed twice")
        secret_vars: dict[str, str] = {}
        for i, secret in enumerate(m.build_secrets):
            variable = secret_env_name(secret)
            if secret in m.build_secrets[:i]:
                add((*at, "build_secrets", i), f"build secret {_short(secret)} is listed twice")
            elif variable in secret_vars:
                add(
                    (*at, "build_secrets", i),
                    f"build secret {_short(secret)} and {_short(secret_vars[variable])} both "
                    f"read {variable}; give them names that differ in more than '-' and '_'",
                )
            secret_vars.setdefault(variable, secret)
        for i, name in enumerate(m.platforms):
            if name in m.platforms[:i]:
                add((*at, "platforms", i), f"platform {_short(name)} is listed twice")
            elif base is not None and BY_NAME[name].oci_platform not in {
                BY_NAME[p].oci_platform for p in base.platforms
            }:
                add(
                    (*at, "platforms", i),
                    f"{name} is not supported by base {_short(m.base)} "
                    f"(it has: {', '.join(base.platforms)})",
                )
    for bid, base in (view.bases or {}).items():
        for i, name in enumerate(base.platforms if base is not None else ()):
            if name in base.platforms[:i]:
                add(("bases", bid, "platforms", i), f"platform {_short(name)} is listed twice")
    return problems


# --- the files the store names ----------------------------------------------------------------


def _named_files(view: _View) -> list[tuple[str, str]]:
    """(field path, relative file path) for every valid entry's file."""
    named = []
    for name, template in (view.templates or {}).items():
        if template is not None:
            named.append((location("templates", name, "path"), template.path))
    for name, versions in (view.modules or {}).items():
        for version, module in (versions or {}).items():
            if module is not None:
                named.append((location("modules", name, version, "path"), module.path))
    for name, suite in (view.test_suites or {}).items():
        if suite is not None:
            named.append((location("test_suites", name, "path"), suite.path))
    return named


@dataclass
class _Reader:
    """What one load has read: bytes so far, and each file by (device, inode), read once."""

    total: int = 0
    seen: dict[tuple[int, int], StoreFile] = field(default_factory=dict)


def _read_named_file(
    root: Path, real_root: Path, file: str, where: str, rel: str, reader: _Reader
) -> tuple[StoreFile | None, Problem | None]:
    def problem(message: str) -> tuple[None, Problem]:
        return None, Problem(file, where, message)

    shown = json.dumps(rel)
    if rel.endswith("/"):
        return problem(f"{shown} ends with '/'; name a file, without a trailing slash")
    if rel.startswith("/"):
        return problem(f"{shown} is absolute; paths are relative to the store's folder {root}")
    if "\\" in rel:
        return problem(f"{shown} contains '\\'; separate folders with '/'")
    if _escapes(rel):
        return problem(f"{shown} leaves the store's folder with '..'; paths must stay inside it")
    candidate = root / rel
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        if candidate.is_symlink():
            return problem(f"{shown} is a symlink to a file that does not exist")
        return problem(f"no such file {shown} in {root}")
    except NotADirectoryError:
        return problem(f"{shown}: a part of the path is a file, not a folder")
    except RuntimeError:  # Python 3.11/3.12 report a symlink loop this way
        return problem(f"{shown} cannot be resolved: symlink loop")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return problem(f"{shown} cannot be resolved: symlink loop")
        return problem(f"{shown} cannot be resolved: {exc.strerror or exc}")
    if not resolved.is_relative_to(real_root):
        return problem(
            f"{shown} leaves the store's folder through a symlink (it points to {resolved}); "
            "paths must stay inside it"
        )
    try:
        st = resolved.stat()
    except OSError as exc:
        return problem(f"{shown} cannot be read: {exc.strerror or exc}")
    if stat.S_ISDIR(st.st_mode):
        return problem(f"{shown} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        return problem(f"{shown} is not a regular file")
    if st.st_nlink > 1:
        return problem(
            f"{shown} has {st.st_nlink} hard links; a file the store names must have one "
            "(a hard link can reach a file outside the store)"
        )
    if st.st_size > MAX_FILE_BYTES:
        return problem(
            f"{shown} is {st.st_size} bytes; files the store names may be at most {MAX_FILE_BYTES}"
        )
    same = reader.seen.get((st.st_dev, st.st_ino))
    if same is not None:  # the same file under another spelling: read once
        return StoreFile(rel, same.text, same.sha256), None
    if reader.total + st.st_size > MAX_TOTAL_BYTES:
        return problem(
            f"{shown} would take the bytes read from the store past {MAX_TOTAL_BYTES} "
            f"({reader.total} read so far); a store and its files may be at most that"
        )
    try:
        with resolved.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return problem(f"{shown} cannot be read: {exc.strerror or exc}")
    reader.total += len(data)
    if len(data) > MAX_FILE_BYTES:
        return problem(f"{shown} is over {MAX_FILE_BYTES} bytes, the most a named file may have")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return problem(
            f"{shown} is not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}, "
            f"{_line_column(data, exc.start)})"
        )
    read = StoreFile(rel, text, hashlib.sha256(data).hexdigest())
    reader.seen[(st.st_dev, st.st_ino)] = read
    return read, None


def _escapes(rel: str) -> bool:
    """Whether `rel`, read without following symlinks, climbs above its starting folder."""
    depth = 0
    for part in PurePosixPath(rel).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part != ".":
            depth += 1
    return False


# --- the entry point --------------------------------------------------------------------------


def load_store(path: Path | str) -> LoadedStore:
    """Read, parse and check a manifest store; raise `StoreError` with every problem found."""
    path = Path(path)
    file = str(path)
    raw = _read_store_bytes(path, file)
    data, problems = _parse_store_json(raw, file)

    model: ManifestStore | None = None
    try:
        model = ManifestStore.model_validate(data)
    except ValidationError as exc:
        problems += _pydantic_problems(file, exc)
    view = _View.of_model(model) if model is not None else _View.of_raw(data)
    problems += _cross_reference_problems(file, view)

    files: dict[str, StoreFile] = {}
    root = path.parent
    try:
        real_root = root.resolve()
    except (OSError, RuntimeError):
        _fail(file, "the store's folder cannot be resolved (a symlink loop?)")
    reader = _Reader(total=len(raw))
    for where, rel in _named_files(view):
        if rel in files:
            continue
        read, problem = _read_named_file(root, real_root, file, where, rel, reader)
        if problem:
            problems.append(problem)
        elif read:
            files[rel] = read
    if problems or model is None:
        raise StoreError(problems)

    digest = hashlib.sha256(raw)
    for rel in sorted(files):
        digest.update(f"\0{rel}\0{files[rel].sha256}".encode())
    loaded = LoadedStore(path=path, model=model, files=files, sha256=digest.hexdigest())
    # What the files say: fragments and templates parsed, every combination rendered (with a
    # placeholder base digest: no registry needed) and its Dockerfile checked.
    from factory.store.render import content_problems

    problems = content_problems(loaded)
    if problems:
        raise StoreError(problems)
    return loaded
