"""A synthetic manifest store of N manifests (and records for it), built from the example store."""

import json
import random
import shutil
from pathlib import Path

from factory.settings import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "control_plane" / "data"
PLATFORM_SETS = (
    ["linux/amd64", "linux/arm64", "linux/amd64+gpu"],
    ["linux/amd64", "linux/arm64"],
    ["linux/amd64"],
    ["linux/arm64"],
)
FRAGMENT_SETS = (
    {"security": "0.1.0", "core": "0.1.0", "light": "0.1.0"},
    {"security": "0.1.0", "core": "0.1.0", "httpd": "0.1.0"},
    {"security": "0.1.0", "core": "0.1.0", "legacy": "0.1.0"},
)


def write_synthetic_store(folder: Path, manifests: int, *, seed: int = 7) -> Path:
    """Copy the example store into `folder` and give it `manifests` generated manifests."""
    rng = random.Random(seed)
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(EXAMPLE, folder)
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data["manifests"] = {
        f"svc-{i:05d}": {
            "template": "service",
            "base": "busybox",
            "fragments": dict(rng.choice(FRAGMENT_SETS)),
            "platforms": list(rng.choice(PLATFORM_SETS)),
            "tests": ["smoke"],
            "priority": "high" if i % 50 == 0 else "normal",
        }
        for i in range(manifests)
    }
    path.write_text(json.dumps(data, indent=1))
    return path
