"""Where things are: every setting comes from an environment variable with an embedded default.

Relative paths in the environment are taken from the current directory; the embedded defaults are
anchored at the project's checkout, so `dagster dev`, the CLI and the tests agree wherever they
start.
"""

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_MANIFEST_STORE = PROJECT_ROOT / "control_plane" / "data" / "manifest.json"
DEFAULT_DATA_DIR = PROJECT_ROOT / ".factory"
DEFAULT_REGISTRY = "127.0.0.1:5000"


def _path_from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


@dataclass(frozen=True)
class Settings:
    """The configuration every part of Factory reads."""

    manifest_store: Path
    data_dir: Path
    registry: str

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            manifest_store=_path_from_env("FACTORY_MANIFEST_STORE", DEFAULT_MANIFEST_STORE),
            data_dir=_path_from_env("FACTORY_DATA_DIR", DEFAULT_DATA_DIR),
            registry=os.environ.get("FACTORY_REGISTRY") or DEFAULT_REGISTRY,
        )

    @property
    def dagster_home(self) -> Path:
        return _path_from_env("DAGSTER_HOME", self.data_dir / "dagster")
