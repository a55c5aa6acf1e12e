"""Loading and validating a manifest store: the JSON file and every file it names.

`load_store` either returns a `LoadedStore` (the models, each named file's text and sha256) or
raises `StoreError` listing every problem with its file and field path. Nothing here writes.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from factory.errors import Problem, StoreError
from factory.manifest import Manifest, ManifestStore
from factory.platforms import BY_NAME, Platform

# A store of 10,000 manifests is about 3 MB; anything far past that is a mistake or an attack.
MAX_STORE_BYTES = 8 * 1024 * 1024
# Templates, fragments and test suites are short text files.
MAX_FILE_BYTES = 1024 * 1024


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
        """Every (manifest id, platform) the store lists, in a stable order."""
        out = []
        for manifest_id in sorted(self.model.manifests):
            if manifest_ids and manifest_id not in manifest_ids:
                continue
            for name in self.model.manifests[manifest_id].platforms:
                if platforms and name not in platforms:
                    continue
                out.append((manifest_id, BY_NAME[name]))
        return out

    def partition_keys(self, platform: Platform) -> list[str]:
        """The manifest ids that list `platform`: the keys of its dynamic partitions."""
        return sorted(
            mid for mid, m in self.model.manifests.items() if platform.name in m.platforms
        )


class _DuplicateKeys(ValueError):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            msg = f"duplicate key {key!r} in one JSON object"
            raise _DuplicateKeys(msg)
        seen[key] = value
    return seen


def _location(loc: tuple) -> str:
    parts = []
    for item in loc:
        if item == "[key]":
            parts[-1] = f"{parts[-1]} (as a key)" if parts else "(key)"
        elif isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(str(item))
    return ".".join(parts).replace(".[", "[")


def _pydantic_problems(file: str, exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "string_pattern_mismatch" and "[key]" in loc:
            message = f"{err['input']!r} is not a valid id (lowercase letters, digits, '_' and '-', at most 63, starting with a letter or digit)"
        elif kind == "string_pattern_mismatch":
            message = f"{err['input']!r} does not match {err['ctx']['pattern']}"
        elif kind == "literal_error":
            message = f"{err['input']!r} is not allowed; expected {err['ctx']['expected']}"
        elif kind == "missing":
            message = "required field is missing"
        else:
            message = f"{err['msg']} (got {err['input']!r})" if "input" in err else err["msg"]
        problems.append(Problem(file, _location(loc), message))
    return problems


def _cross_reference_problems(file: str, store: ManifestStore) -> list[Problem]:
    problems = []

    def known(names) -> str:
        return ", ".join(sorted(names)) or "none"

    for mid, m in store.manifests.items():
        where = f"manifests.{mid}"
        if m.template not in store.templates:
            problems.append(Problem(file, f"{where}.template",
                                    f"unknown template {m.template!r} (known: {known(store.templates)})"))
        base = store.bases.get(m.base)
        if base is None:
            problems.append(Problem(file, f"{where}.base",
                                    f"unknown base {m.base!r} (known: {known(store.bases)})"))
        for name, version in m.fragments.items():
            versions = store.modules.get(name)
            if versions is None:
                problems.append(Problem(file, f"{where}.fragments.{name}",
                                        f"unknown module {name!r} (known: {known(store.modules)})"))
            elif version not in versions:
                problems.append(Problem(file, f"{where}.fragments.{name}",
                                        f"unknown version {version!r} of module {name!r} (known: {known(versions)})"))
        for i, suite in enumerate(m.tests):
            if suite not in store.test_suites:
                problems.append(Problem(file, f"{where}.tests[{i}]",
                                        f"unknown test suite {suite!r} (known: {known(store.test_suites)})"))
        if len(set(m.tests)) != len(m.tests):
            problems.append(Problem(file, f"{where}.tests", "a test suite is listed twice"))
        if len(set(m.platforms)) != len(m.platforms):
            problems.append(Problem(file, f"{where}.platforms", "a platform is listed twice"))
        if base is not None:
            base_archs = {BY_NAME[p].oci_platform for p in base.platforms}
            for i, name in enumerate(m.platforms):
                if BY_NAME[name].oci_platform not in base_archs:
                    problems.append(Problem(file, f"{where}.platforms[{i}]",
                                            f"{name} is not supported by base {m.base!r} (it has: {', '.join(base.platforms)})"))
    for bid, base in store.bases.items():
        if len(set(base.platforms)) != len(base.platforms):
            problems.append(Problem(file, f"bases.{bid}.platforms", "a platform is listed twice"))
    return problems


def _named_files(store: ManifestStore) -> list[tuple[str, str]]:
    """(field path, relative file path) for every file the store names."""
    named = [(f"templates.{n}.path", t.path) for n, t in store.templates.items()]
    for name, versions in store.modules.items():
        named += [(f"modules.{name}.{v}.path", mv.path) for v, mv in versions.items()]
    named += [(f"test_suites.{n}.path", s.path) for n, s in store.test_suites.items()]
    return named


def _read_named_file(
    root: Path, file: str, location: str, rel: str
) -> tuple[StoreFile | None, Problem | None]:
    def problem(message: str) -> tuple[None, Problem]:
        return None, Problem(file, location, message)

    if Path(rel).is_absolute() or "\\" in rel or "\x00" in rel:
        return problem(f"{rel!r} must be a path relative to the store's folder")
    candidate = root / rel
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        return problem(f"{rel!r}: no such file in {root}")
    except (OSError, RuntimeError) as exc:  # symlink loops raise RuntimeError or OSError
        return problem(f"{rel!r} cannot be resolved: {exc}")
    if not resolved.is_relative_to(root.resolve()):
        how = "through a symlink" if ".." not in Path(rel).parts else "with '..'"
        return problem(f"{rel!r} leaves the store's folder {how} (it points to {resolved})")
    if not resolved.is_file():
        return problem(f"{rel!r} is not a regular file")
    size = resolved.stat().st_size
    if size > MAX_FILE_BYTES:
        return problem(f"{rel!r} is {size} bytes; files the store names may be at most {MAX_FILE_BYTES}")
    data = resolved.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return problem(f"{rel!r} is not valid UTF-8 (byte {exc.start})")
    return StoreFile(rel, text, hashlib.sha256(data).hexdigest()), None


def load_store(path: Path | str) -> LoadedStore:
    """Read, parse and check a manifest store; raise `StoreError` with every problem found."""
    path = Path(path)
    file = str(path)
    if not path.exists():
        raise StoreError([Problem(file, "", "no such file (set FACTORY_MANIFEST_STORE or --manifest-store)")])
    if not path.is_file():
        raise StoreError([Problem(file, "", "not a regular file")])
    size = path.stat().st_size
    if size > MAX_STORE_BYTES:
        raise StoreError([Problem(file, "", f"the store is {size} bytes; at most {MAX_STORE_BYTES} are read")])
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoreError([Problem(file, "", f"not valid UTF-8 (byte {exc.start})")]) from None
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates)
    except _DuplicateKeys as exc:
        raise StoreError([Problem(file, "", str(exc))]) from None
    except json.JSONDecodeError as exc:
        raise StoreError([Problem(file, f"line {exc.lineno} column {exc.colno}", f"malformed JSON: {exc.msg}")]) from None
    except RecursionError:
        raise StoreError([Problem(file, "", "malformed JSON: nested too deeply")]) from None
    if not isinstance(data, dict):
        raise StoreError([Problem(file, "", f"the store must be a JSON object, not {type(data).__name__}")])

    try:
        model = ManifestStore.model_validate(data)
    except ValidationError as exc:
        raise StoreError(_pydantic_problems(file, exc)) from None

    problems = _cross_reference_problems(file, model)
    files: dict[str, StoreFile] = {}
    root = path.parent
    for location, rel in _named_files(model):
        if rel in files:
            continue
        read, problem = _read_named_file(root, file, location, rel)
        if problem:
            problems.append(problem)
        elif read:
            files[rel] = read
    if problems:
        raise StoreError(problems)

    digest = hashlib.sha256(raw)
    for rel in sorted(files):
        digest.update(f"\0{rel}\0{files[rel].sha256}".encode())
    return LoadedStore(path=path, model=model, files=files, sha256=digest.hexdigest())
