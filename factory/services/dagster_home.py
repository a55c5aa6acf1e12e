"""DAGSTER_HOME's dagster.yaml: the project's instance config, written without importing Dagster.

`factory run` writes it before its workers start, so that each worker can open the instance while
the plan is still being made; the pool limits and partitions that need Dagster are set by
factory_assets/instance.py.
"""

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from factory.safe_json import printable
from factory.settings import PROJECT_ROOT, SettingsError

INSTANCE_CONFIG = PROJECT_ROOT / "dagster.yaml"
# A dagster.yaml that names any of these configures its own storage (Dagster's `storage` key, or
# the older one-key-per-storage form).
STORAGE_KEYS = ("storage", "run_storage", "event_log_storage", "schedule_storage")


def _names_any(config: Path, keys: tuple[str, ...]) -> bool:
    try:
        loaded = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(loaded, dict) and any(loaded.get(key) for key in keys)


def names_storage(config: Path) -> bool:
    """Whether the dagster.yaml at `config` names a storage of its own (an operator's instance)."""
    return _names_any(config, STORAGE_KEYS)


def names_compute_logs(config: Path) -> bool:
    """Whether the dagster.yaml at `config` names a compute log manager of its own."""
    return _names_any(config, ("compute_logs",))


def write_instance_config(home: Path) -> Path:
    """Create `home` with the project's dagster.yaml and export it as DAGSTER_HOME for child
    processes. A dagster.yaml that names a storage of its own (PostgreSQL, as in
    deploy/dagster.yaml for the several-hosts shape) is the operator's instance and is left as
    it is."""
    target = home / "dagster.yaml"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if not target.exists() or (
            target.read_bytes() != INSTANCE_CONFIG.read_bytes() and not names_storage(target)
        ):
            shutil.copyfile(INSTANCE_CONFIG, target)
    except OSError as exc:
        raise _unusable(home, exc) from None
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _unusable(home: Path, exc: OSError) -> SettingsError:
    return SettingsError(
        f"DAGSTER_HOME={printable(str(home), limit=200)} cannot hold the Dagster instance: "
        f"{exc.strerror or exc} ({printable(exc.filename or str(home), limit=200)})"
    )


@contextmanager
def first_open_lock(home: Path) -> Iterator[None]:
    """Held while one of `factory run`'s workers opens the instance at `home`. Dagster creates
    and stamps its databases on first open, and two processes doing that at once on a new
    DAGSTER_HOME left a SQLite run database with two schema heads that no later open accepts;
    the workers start side by side, so they take turns here."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        lock = open(home / ".factory-open.lock", "a")
    except OSError as exc:
        raise _unusable(home, exc) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
