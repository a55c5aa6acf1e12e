"""Where records, errors and evidence are kept: one interface, a local folder implementation.

Everything is keyed by build_id and written once: a temp file in the same folder, then a hard link
to the final name, which fails if the name exists. A reader never sees half a file and a second
write for the same build_id is refused, not silently replacing the first.
"""

import hashlib
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from factory.errors import RecordExistsError
from factory.records import CompatibilityRecord

# kind -> (folder, file name pattern); the names DESIGN.md fixes.
LAYOUT: dict[str, tuple[str, str]] = {
    "record": ("records", "{build_id}.json"),
    "error": ("errors", "error-{build_id}.json"),
    "dlq": ("dlq", "{build_id}.json"),
    "evidence": ("evidence", "{build_id}.log"),
    "sbom": ("sbom", "{build_id}.cdx.json"),
    "provenance": ("provenance", "{build_id}.intoto.json"),
}


def json_bytes(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


class RecordStore(ABC):
    """Immutable, build_id-keyed storage for records and their evidence."""

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

    def put_json(self, kind: str, build_id: str, value: object) -> tuple[str, str]:
        return self.put(kind, build_id, json_bytes(value))

    def write_record(self, record: CompatibilityRecord) -> str:
        uri, _ = self.put_json("record", record.build_id, record.model_dump(mode="json"))
        return uri

    def records(self) -> Iterator[CompatibilityRecord]:
        for build_id in self.list_ids("record"):
            data = self.get("record", build_id)
            if data is not None:
                yield CompatibilityRecord.model_validate_json(data)

    def latest_by_combination(self) -> dict[tuple[str, str], CompatibilityRecord]:
        """The newest record of each (manifest_id, platform)."""
        latest: dict[tuple[str, str], CompatibilityRecord] = {}
        for record in self.records():
            key = (record.manifest_id, record.platform)
            current = latest.get(key)
            if current is None or (record.finished_at, record.build_id) > (
                current.finished_at,
                current.build_id,
            ):
                latest[key] = record
        return latest


class LocalRecordStore(RecordStore):
    """The embedded default: folders under the data dir (`.factory/records`, ...)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, kind: str, build_id: str) -> Path:
        folder, pattern = LAYOUT[kind]
        if not build_id or "/" in build_id or build_id.startswith("."):
            msg = f"invalid build_id {build_id!r}"
            raise ValueError(msg)
        return self.root / folder / pattern.format(build_id=build_id)

    def uri(self, kind: str, build_id: str) -> str:
        return self.path(kind, build_id).resolve().as_uri()

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
        return final.resolve().as_uri(), hashlib.sha256(data).hexdigest()

    def get(self, kind: str, build_id: str) -> bytes | None:
        try:
            return self.path(kind, build_id).read_bytes()
        except FileNotFoundError:
            return None

    def list_ids(self, kind: str) -> list[str]:
        folder, pattern = LAYOUT[kind]
        prefix, suffix = pattern.split("{build_id}")
        directory = self.root / folder
        if not directory.is_dir():
            return []
        return sorted(
            name[len(prefix) : len(name) - len(suffix)]
            for name in os.listdir(directory)
            if name.startswith(prefix) and name.endswith(suffix) and not name.startswith(".")
        )


class RecordWatcher:
    """The records written since the watcher was made, found by the Dagster run that wrote them."""

    def __init__(self, store: RecordStore):
        self.store = store
        self._seen = set(store.list_ids("record"))
        self._by_run: dict[str, CompatibilityRecord] = {}

    def record_of(self, run_id: str | None) -> CompatibilityRecord | None:
        for build_id in set(self.store.list_ids("record")) - self._seen:
            self._seen.add(build_id)
            data = self.store.get("record", build_id)
            if data is not None:
                record = CompatibilityRecord.model_validate_json(data)
                if record.dagster.run_id:
                    self._by_run[record.dagster.run_id] = record
        return self._by_run.get(run_id) if run_id else None
