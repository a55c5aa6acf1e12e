"""Where things are: every setting comes from an environment variable with an embedded default.

Relative paths in the environment are taken from the current directory; the embedded defaults are
anchored at the project's checkout, so `dagster dev`, the CLI and the tests agree wherever they
start. A path that cannot be used (`~nosuchuser/...`, a symlink loop, an empty
FACTORY_MANIFEST_STORE) is a `SettingsError` naming the variable, never a RuntimeError.
"""

import errno
import math
import os
from dataclasses import dataclass
from pathlib import Path

from factory.errors import FactoryError

PROJECT_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_MANIFEST_STORE = PROJECT_ROOT / "control_plane" / "data" / "manifest.json"
DEFAULT_DATA_DIR = PROJECT_ROOT / ".factory"
DEFAULT_REGISTRY = "127.0.0.1:5000"
DEFAULT_RENDER_TIMEOUT_S = 2.0
MAX_RENDER_TIMEOUT_S = 60.0


class SettingsError(FactoryError):
    """A setting (environment variable or option) that cannot be used."""


def _shown(value: str) -> str:
    from factory.safe_json import printable

    return printable(value, limit=200)


def resolve_path(value: str, source: str) -> Path:
    """`value` as an absolute path (`~` expanded); `source` names where it came from."""
    if not value.strip():
        msg = f"{source} is empty; give a path (or unset it to use the default)"
        raise SettingsError(msg)
    if "\x00" in value:
        msg = f"{source} contains a NUL byte; give a path"
        raise SettingsError(msg)
    try:
        return Path(value).expanduser().resolve()
    except RuntimeError as exc:  # Python 3.11/3.12: "Could not determine home directory", loops
        text = str(exc)
        if "home directory" in text or value.startswith("~"):
            msg = f"{source} {_shown(value)}: cannot expand '~' (no such user or no home directory)"
        else:
            msg = f"{source} {_shown(value)} cannot be resolved: symlink loop"
        raise SettingsError(msg) from None
    except OSError as exc:
        reason = "symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        msg = f"{source} {_shown(value)} cannot be resolved: {reason}"
        raise SettingsError(msg) from None


def _path_from_env(name: str, default: Path, *, empty_ok: bool = True) -> Path:
    value = os.environ.get(name)
    if value is None or (value == "" and empty_ok):
        return default
    return resolve_path(value, name)


def dockerfile_syntax_allowlist() -> frozenset[str]:
    """`# syntax=` values a template may use (FACTORY_DOCKERFILE_SYNTAX_ALLOWLIST, comma or space
    separated, exact matches such as docker/dockerfile:1.7@sha256:...); empty by default."""
    raw = os.environ.get("FACTORY_DOCKERFILE_SYNTAX_ALLOWLIST", "")
    return frozenset(item for item in raw.replace(",", " ").split() if item)


def render_timeout_s() -> float:
    """Wall time one render may take (FACTORY_RENDER_TIMEOUT_S, default 2 s, at most 60 s)."""
    raw = os.environ.get("FACTORY_RENDER_TIMEOUT_S", "")
    if not raw.strip():
        return DEFAULT_RENDER_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0 < value <= MAX_RENDER_TIMEOUT_S):
        msg = (
            f"FACTORY_RENDER_TIMEOUT_S={_shown(raw)} is not a number of seconds in "
            f"(0, {MAX_RENDER_TIMEOUT_S:g}]"
        )
        raise SettingsError(msg)
    return value


@dataclass(frozen=True)
class Settings:
    """The configuration every part of Factory reads."""

    manifest_store: Path
    data_dir: Path
    registry: str

    @classmethod
    def from_env(cls, *, manifest_store: str | None = None) -> "Settings":
        """The settings; `manifest_store` (the --manifest-store option) wins over the env."""
        if manifest_store is not None:
            store = resolve_path(manifest_store, "--manifest-store")
        else:
            store = _path_from_env("FACTORY_MANIFEST_STORE", DEFAULT_MANIFEST_STORE, empty_ok=False)
        return cls(
            manifest_store=store,
            data_dir=_path_from_env("FACTORY_DATA_DIR", DEFAULT_DATA_DIR),
            registry=os.environ.get("FACTORY_REGISTRY") or DEFAULT_REGISTRY,
        )

    @property
    def dagster_home(self) -> Path:
        return _path_from_env("DAGSTER_HOME", self.data_dir / "dagster")
