"""Where records, errors and evidence are kept: one interface, a local folder implementation.

Everything is keyed by build_id and written once: a temp file in the same folder, then a hard link
to the final name, which fails if the name exists. A reader never sees half a file and a second
write for the same build_id is refused, not silently replacing the first.

Reading does not trust what is there. Ids are checked before they become file names (no `/`, no
leading `.`, at most 128 characters). An entry is read only if it is a regular file inside the
data dir, within a size cap per kind (`factory.safe_json`), and a record is used only if it parses
and its fields are usable (its build_id is its file name, ids and times are well formed). Anything
else is skipped by `records()` with one warning line on stderr naming the file and why, and a
count at the end; the content is never echoed (docs/records.md).
"""

import hashlib
import json
import os
import re
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from factory.errors import FactoryError, InvalidNameError, RecordExistsError
from factory.records.model import CompatibilityRecord, newest_by
from factory.safe_json import UnreadableEntryError, parse_json, printable, read_bytes

_MIB = 1024 * 1024
# kind -> (folder, file name pattern, most bytes read): the names DESIGN.md fixes, and a cap per
# kind because records and letters are a few KiB while logs can be large.
_KINDS: dict[str, tuple[str, str, int]] = {
    "record": ("records", "{build_id}.json", 4 * _MIB),
    "error": ("errors", "error-{build_id}.json", 4 * _MIB),
    "dlq": ("dlq", "{build_id}.json", 4 * _MIB),
    "evidence": ("evidence", "{build_id}.log", 512 * _MIB),
    "sbom": ("sbom", "{build_id}.cdx.json", 64 * _MIB),
    "provenance": ("provenance", "{build_id}.intoto.json", 16 * _MIB),
}
LAYOUT: dict[str, tuple[str, str]] = {
    kind: (folder, pattern) for kind, (folder, pattern, _) in _KINDS.items()
}
MAX_BYTES: dict[str, int] = {kind: cap for kind, (_, _, cap) in _KINDS.items()}

# A build id (Factory writes uuid4s; dead letters of runs without a record use the run id, and
# requeue markers add `.requeued`): letters, digits, `.`, `_`, `-`, no leading `.`, at most 128
# characters, so it is always one short file name.
STORE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MANIFEST_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
PLATFORM_NAME = re.compile(r"^[a-z0-9]+/[a-z0-9]+(?:[+/][a-z0-9]+){0,2}$")
POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
KEY = re.compile(r"^[A-Za-z0-9]{1,128}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@\[\]-]{0,511}$")
# Warnings already printed by this process: a command that reads the records twice warns once.
_WARNED: set[str] = set()
_WARNED_MAX = 10_000
Model = TypeVar("Model", bound=BaseModel)


def check_id(build_id: object) -> str:
    """`build_id` when it can name a store entry; InvalidNameError (a ValueError) if not."""
    if not isinstance(build_id, str) or not STORE_ID.fullmatch(build_id):
        msg = (
            f"invalid build_id {printable(build_id, limit=80)!r}: expected letters, digits, "
            "'.', '_' or '-', starting with a letter or digit, at most 128 characters"
        )
        raise InvalidNameError(msg)
    return build_id


def warn(line: str) -> None:
    """Print one warning line on stderr, once per process."""
    if line in _WARNED:
        return
    if len(_WARNED) < _WARNED_MAX:
        _WARNED.add(line)
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class SkipReport:
    """Counts and reports the entries a reader skipped: one warning each, then a total."""

    def __init__(self, where: str):
        self.where = where
        self.skipped: list[UnreadableEntryError] = []

    def skip(self, exc: UnreadableEntryError) -> None:
        self.skipped.append(exc)
        warn(f"warning: skipped {exc}")

    def done(self) -> None:
        count = len(self.skipped)
        if count:
            warn(
                f"warning: {count} unreadable entr{'y' if count == 1 else 'ies'} in "
                f"{printable(self.where, limit=300)} skipped (see docs/records.md)"
            )


def validation_summary(exc: ValidationError) -> str:
    """The first field a model refused and why, without the refused value."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    if not errors:
        return "not valid"
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"field {printable(loc, limit=100)}: {printable(first['msg'], limit=200)}{more}"


def record_problem(record: CompatibilityRecord, build_id: str | None = None) -> str | None:
    """Why a parsed record cannot be used (None when it can): ids, keys, times, image names."""
    from factory.report.metrics import parse_time

    if not STORE_ID.fullmatch(record.build_id):
        return "field build_id: not a build id"
    if build_id is not None and record.build_id != build_id:
        return "field build_id: differs from the file name (copied or renamed?)"
    checks = (
        ("manifest_id", record.manifest_id, MANIFEST_ID),
        ("platform", record.platform, PLATFORM_NAME),
        ("pool", record.pool, POOL_NAME),
        ("build_key", record.build_key, KEY),
        ("record_key", record.record_key, KEY),
    )
    for name, value, pattern in checks:
        if not pattern.fullmatch(value):
            return f"field {name}: not a valid {name.replace('_', ' ')}"
    for name in ("started_at", "finished_at"):
        try:
            parse_time(getattr(record, name))
        except (ValueError, OverflowError):
            return f"field {name}: not a UTC ISO 8601 time"
    if record.image is not None:
        if record.image.digest is not None and not DIGEST.fullmatch(record.image.digest):
            return "field image.digest: not a sha256:<64 hex> digest"
        if not IMAGE_REF.fullmatch(record.image.ref):
            return "field image.ref: not an image reference"
    return None


def parse_object(data: bytes, where: str, what: str) -> dict:
    """A JSON object from stored bytes; UnreadableEntryError naming `where` if it is not one."""
    value = parse_json(data, where)
    if not isinstance(value, dict):
        raise UnreadableEntryError(where, f"is not {what} (a JSON {type(value).__name__})")
    return value


def parse_model(data: bytes, where: str, model: type[Model], what: str) -> Model:
    """Stored bytes as a `model`; UnreadableEntryError naming `where` and the first bad field."""
    value = parse_object(data, where, what)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise UnreadableEntryError(where, f"is not {what}: {validation_summary(exc)}") from None


def load_record(data: bytes, where: str, build_id: str | None = None) -> CompatibilityRecord:
    """A stored record checked for use; UnreadableEntryError naming `where` and the field."""
    record = parse_model(data, where, CompatibilityRecord, "a record")
    problem = record_problem(record, build_id)
    if problem:
        raise UnreadableEntryError(where, f"is not a usable record: {problem}")
    return record


def json_bytes(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


class RecordStore(ABC):
    """Immutable, build_id-keyed storage for records and their evidence."""

    # The records index that `write_record` keeps current (factory.records.index), when attached.
    index = None

    @abstractmethod
    def put(self, kind: str, build_id: str, data: bytes) -> tuple[str, str]:
        """Write once; return (uri, sha256). Raise RecordExistsError if already written."""

    @abstractmethod
    def get(self, kind: str, build_id: str) -> bytes | None:
        """The bytes written for kind/build_id, or None."""

    @abstractmethod
    def list_ids(self, kind: str) -> list[str]:
        """The build_ids that have a `kind` entry."""

    @abstractmethod
    def uri(self, kind: str, build_id: str) -> str:
        """Where kind/build_id lives (file:// or s3://)."""

    def location(self, kind: str) -> str:
        """The folder (or key prefix) that holds the `kind` entries, for messages."""
        return LAYOUT[kind][0]

    def where(self, kind: str, build_id: str) -> str:
        """kind/build_id as messages name it; ids that cannot be a name are shown escaped."""
        pattern = LAYOUT[kind][1]
        try:
            return self.uri(kind, build_id)
        except ValueError:
            name = pattern.format(build_id=printable(build_id, limit=80))
            return f"{self.location(kind)}/{name}"

    def read_record(
        self, build_id: str, report: SkipReport | None = None
    ) -> CompatibilityRecord | None:
        """The checked record of build_id, None when absent; a bad one is skipped into `report`
        (or raised as UnreadableEntryError without one)."""
        try:
            check_id(build_id)
            data = self.get("record", build_id)
            if data is None:
                return None
            return load_record(data, self.where("record", build_id), build_id)
        except UnreadableEntryError as exc:
            error = exc
        except ValueError as exc:  # a listed name that is not a build id
            error = UnreadableEntryError(self.where("record", build_id), f"bad name: {exc}")
        if report is None:
            raise error
        report.skip(error)
        return None

    def put_json(self, kind: str, build_id: str, value: object) -> tuple[str, str]:
        return self.put(kind, build_id, json_bytes(value))

    def write_record(self, record: CompatibilityRecord) -> str:
        """Write the record, then index it. The file is the source of truth: an index that cannot
        be written is a warning, and the pending row (or `factory records reindex`) repairs it."""
        index = self.index
        if index is not None:
            try:
                index.begin(record.build_id)
            except FactoryError as exc:
                warn(f"warning: {exc}; the record is still written")
        uri, _ = self.put_json("record", record.build_id, record.model_dump(mode="json"))
        if index is not None:
            try:
                index.add(record, uri)
            except FactoryError as exc:
                warn(f"warning: {exc}; run `factory records reindex` once it is reachable")
        return uri

    def records(self, report: SkipReport | None = None) -> Iterator[CompatibilityRecord]:
        """Every usable record; unreadable ones are skipped and reported (module docstring)."""
        own = report is None
        report = report or SkipReport(self.location("record"))
        for build_id in self.list_ids("record"):
            record = self.read_record(build_id, report)
            if record is not None:
                yield record
        if own:
            report.done()

    def latest_by_combination(self) -> dict[tuple[str, str], CompatibilityRecord]:
        """The newest record of each (manifest_id, platform)."""
        return newest_by(self.records(), lambda r: (r.manifest_id, r.platform))


class LocalRecordStore(RecordStore):
    """The embedded default: folders under the data dir (`.factory/records`, ...)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, kind: str, build_id: str) -> Path:
        folder, pattern = LAYOUT[kind]
        check_id(build_id)
        return self.root / folder / pattern.format(build_id=build_id)

    def uri(self, kind: str, build_id: str) -> str:
        # The folder is resolved, not the entry: a planted symlink does not change the name.
        path = self.path(kind, build_id)
        return (path.parent.resolve() / path.name).as_uri()

    def location(self, kind: str) -> str:
        return str(self.root / LAYOUT[kind][0])

    def where(self, kind: str, build_id: str) -> str:
        try:
            return str(self.path(kind, build_id))
        except ValueError:
            return super().where(kind, build_id)

    def put(self, kind: str, build_id: str, data: bytes) -> tuple[str, str]:
        final = self.path(kind, build_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-", suffix=final.suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, final)
            except FileExistsError:
                msg = f"{final} already exists: {kind} entries are written once per build_id"
                raise RecordExistsError(msg) from None
        finally:
            os.unlink(tmp)
        return self.uri(kind, build_id), hashlib.sha256(data).hexdigest()

    def get(self, kind: str, build_id: str) -> bytes | None:
        """The entry's bytes, None when absent; UnreadableEntryError when it is there but is not a
        regular file inside the data dir within MAX_BYTES[kind]."""
        try:
            return read_bytes(self.path(kind, build_id), root=self.root, max_bytes=MAX_BYTES[kind])
        except (FileNotFoundError, NotADirectoryError):
            return None

    def list_ids(self, kind: str) -> list[str]:
        folder, pattern = LAYOUT[kind]
        prefix, suffix = pattern.split("{build_id}")
        directory = self.root / folder
        if not directory.is_dir():
            if os.path.lexists(directory):
                warn(f"warning: skipped {printable(str(directory))}: not a directory")
            return []
        try:
            names = os.listdir(directory)
        except OSError as exc:
            warn(f"warning: cannot list {printable(str(directory))}: {exc.strerror}")
            return []
        return sorted(
            name[len(prefix) : len(name) - len(suffix)]
            for name in names
            if name.startswith(prefix)
            and name.endswith(suffix)
            and len(name) > len(prefix) + len(suffix)
            and not name.startswith(".")
        )


class RecordWatcher:
    """The records written since the watcher was made, found by the Dagster run that wrote them.

    With a records index the run's row is looked up; without one (or when the run's writer could
    not index), the store is listed and new entries read.
    """

    def __init__(self, store: RecordStore):
        self.store = store
        # With an index the listing is only a fallback: old records are then read once, and the
        # run id still picks the right one.
        self._seen = set() if store.index is not None else set(store.list_ids("record"))
        self._by_run: dict[str, CompatibilityRecord] = {}

    def record_of(self, run_id: str | None) -> CompatibilityRecord | None:
        if run_id and run_id in self._by_run:
            return self._by_run[run_id]
        if run_id and self.store.index is not None:
            try:
                found = self.store.index.record_of_run(run_id)
            except FactoryError:
                found = None  # the listing below still finds it
            if found is not None:
                self._seen.add(found.build_id)
                self._by_run[run_id] = found
                return found
        report = SkipReport(self.store.location("record"))
        for build_id in sorted(set(self.store.list_ids("record")) - self._seen):
            self._seen.add(build_id)
            record = self.store.read_record(build_id, report)
            if record is not None and record.dagster.run_id:
                self._by_run[record.dagster.run_id] = record
        report.done()
        return self._by_run.get(run_id) if run_id else None
