"""Test stores built from the example store: same template, fragments and base, other manifests."""

import json
import shutil
from pathlib import Path

from factory.settings import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "control_plane" / "data"


def example_store_copy(
    tmp_path: Path,
    manifests: dict | None = None,
    *,
    files: dict[str, str] | None = None,
    suites: dict[str, dict] | None = None,
    modules: dict[str, dict] | None = None,
) -> Path:
    """Copy the example store into tmp_path, replace its manifests, add files/suites/modules."""
    root = tmp_path / "store"
    shutil.copytree(EXAMPLE, root)
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    if manifests is not None:
        data["manifests"] = manifests
    data["test_suites"].update(suites or {})
    for name, versions in (modules or {}).items():
        data["modules"].setdefault(name, {}).update(versions)
    for rel, text in (files or {}).items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    path.write_text(json.dumps(data, indent=2))
    return path


def manifest(fragments=None, platforms=("linux/amd64",), tests=("smoke",)) -> dict:
    return {
        "template": "service",
        "base": "busybox",
        "fragments": fragments or {"security": "0.1.0", "core": "0.1.0", "light": "0.1.0"},
        "platforms": list(platforms),
        "tests": list(tests),
        "priority": "normal",
    }


def store_with_suite(
    tmp_path: Path, manifest_id: str, suite: str, script: str, *, timeout_s: int, after_smoke=False
) -> Path:
    """The example store with one manifest that runs the shell `script` as test suite `suite`
    (tests/<suite>.sh), alone or after the smoke suite."""
    rel = f"tests/{suite}.sh"
    return example_store_copy(
        tmp_path,
        {manifest_id: manifest(tests=["smoke", suite] if after_smoke else [suite])},
        suites={suite: {"path": rel, "timeout_s": timeout_s}},
        files={rel: script},
    )
