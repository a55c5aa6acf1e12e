"""Remembering, across processes, that a manifest store's files passed the content checks.

Rendering and checking every combination of a 2,000-combination store takes over a second, and
every `factory plan`, `matrix` and `run` starts by loading the store. A store whose bytes (its
sha256 covers the store file and every file it names), settings (syntax allowlist, render
timeout) and checking code are unchanged gives the same answer, so a pass is written down as an
empty file under `<data dir>/cache/store-checks/`, named by the hash of all of that. Only passes
are kept: a store with problems is checked again and every problem shown each time. A cache that
cannot be read or written is ignored.

Only the `factory` command writes passes (`enable_writes`), for the next command to read: a
Dagster process (code server, run, step pod) keeps its passes in memory, and leaves no file on a
disk that a pod does not share anyway.
"""

import hashlib
import os
from functools import cache
from pathlib import Path

_WRITES = {"enabled": False}

# The modules whose code decides what a store's content may say.
CHECKING_MODULES = ("render.py", "dockerfile.py", "store.py", "store_check_cache.py")


@cache
def _code_fingerprint() -> str:
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in CHECKING_MODULES:
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            digest.update(name.encode())
    return digest.hexdigest()


def enable_writes() -> None:
    """Let this process write passes (the `factory` command does, at start)."""
    _WRITES["enabled"] = True


class StoreCheckCache:
    def __init__(self, path: Path | None):
        self.path = path

    @classmethod
    def for_key(cls, key: tuple) -> "StoreCheckCache":
        from factory.settings import Settings, SettingsError

        try:
            data_dir = Settings.from_env().data_dir
        except SettingsError:
            return cls(None)
        if not data_dir.is_dir():
            return cls(None)  # a command does not create the data dir for a cache
        name = hashlib.sha256(repr((key, _code_fingerprint())).encode()).hexdigest()
        return cls(data_dir / "cache" / "store-checks" / name)

    def passed(self) -> bool:
        return self.path is not None and os.path.isfile(self.path)

    def record_pass(self) -> None:
        if self.path is None or not _WRITES["enabled"]:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        except OSError:
            pass  # a read-only data dir only costs the next command the checks again
