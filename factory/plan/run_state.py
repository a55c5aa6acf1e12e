"""What the last `factory run` left in step, so a run with nothing to do can skip Dagster entirely.

Two facts are kept in `<data dir>/run-state.json`, per Dagster instance:

- `partitions`: a fingerprint of the store's manifest x platform combinations as last synced into
  the instance's dynamic partitions;
- `matrix`: the records index generation (row count and newest indexing time) when the
  `compatibility_matrix` and `multiarch_index` assets last materialized successfully.

When the plan has nothing to run and both still hold, `factory run` prints the plan and the matrix
from the index and starts nothing. The file is a cache: when it is missing, unreadable or from
another instance, the run does the full work and rewrites it.
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

from factory.safe_json import UnreadableEntryError, parse_json, read_bytes

NAME = "run-state.json"
MAX_BYTES = 64 * 1024


def combinations_fingerprint(combinations: list[tuple[str, str]]) -> str:
    text = "\n".join(f"{m} {p}" for m, p in sorted(combinations))
    return hashlib.sha256(text.encode()).hexdigest()


class RunState:
    def __init__(self, data_dir: Path, dagster_home: Path):
        self.path = Path(data_dir) / NAME
        self.instance = str(Path(dagster_home).resolve())

    def _read(self) -> dict:
        try:
            value = parse_json(
                read_bytes(self.path, root=self.path.parent, max_bytes=MAX_BYTES), str(self.path)
            )
        except (FileNotFoundError, NotADirectoryError, UnreadableEntryError):
            return {}
        if not isinstance(value, dict) or value.get("instance") != self.instance:
            return {}
        return value

    def _write(self, **changes: object) -> None:
        state = self._read()
        state.update(changes, instance=self.instance)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-run-state-")
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh)
        os.replace(tmp, self.path)

    def partitions_synced(self, fingerprint: str) -> bool:
        return self._read().get("partitions") == fingerprint

    def record_partitions(self, fingerprint: str) -> None:
        self._write(partitions=fingerprint)

    def matrix_current(self, generation: list) -> bool:
        return self._read().get("matrix") == generation

    def record_matrix(self, generation: list) -> None:
        self._write(matrix=generation)
