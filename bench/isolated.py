"""An isolated Factory for build benchmarks: its own registry, store copy, records and instance.

Build figures only mean something from a known cache state, and the project's registry already
holds every cache ref of the example matrix. So a benchmark starts a temporary `docker-registry`
on a free loopback port (its namespace starts empty), copies the busybox base into it byte for
byte (same per-platform digests as the project's), points a copy of the example store at it, and
runs `factory` with its own data dir and DAGSTER_HOME. Engines come from
`factory.services.extra_engine`. Everything started here is stopped by PID
(`factory.services.server_process`). Also what the benchmarks that repeat rounds share: their
options, the rounds, and the wall time and host load around them.
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from factory.build.buildlog import matching_steps, run_steps
from factory.errors import FactoryError
from factory.records.model import CompatibilityRecord
from factory.records.store import LocalRecordStore
from factory.registry.client import RegistryClient
from factory.registry.manifests import INDEX_TYPES
from factory.registry.names import split_image
from factory.services import server_process
from factory.settings import DEFAULT_REGISTRY, PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "control_plane" / "data"
FACTORY_CLI = PROJECT_ROOT / ".venv" / "bin" / "factory"
BASE_REPOSITORY = "factory/base/busybox"
BASE_TAG = "1.35"
REGISTRY_START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
STABLE_FRAGMENTS = ("security", "core")
T = TypeVar("T")


@contextlib.contextmanager
def temp_registry(folder: Path) -> Iterator[str]:
    """Run an empty `docker-registry` under `folder`; yield its address; stop it by PID."""
    folder.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{server_process.free_port()}"
    config = folder / "config.yml"
    # YAML is a superset of JSON.
    config.write_text(
        json.dumps(
            {
                "version": "0.1",
                "log": {"level": "warn", "accesslog": {"disabled": True}},
                "storage": {
                    "filesystem": {"rootdirectory": str(folder / "data")},
                    "delete": {"enabled": True},
                },
                "http": {"addr": address, "secret": os.urandom(16).hex()},
            }
        )
    )
    proc = serve_registry(config, address, folder / "registry.log", REGISTRY_START_TIMEOUT_S)
    try:
        yield address
    finally:
        server_process.stop(proc, timeout_s=STOP_TIMEOUT_S)


def serve_registry(config: Path, address: str, log: Path, timeout_s: float):
    """`docker-registry serve config` (listening on `address`), once it answers; its process."""
    proc = server_process.spawn(["docker-registry", "serve", config], log)
    client = RegistryClient(address, timeout=2)

    def answers() -> bool:
        client.ping()  # a FactoryError until the registry listens
        return True

    try:
        server_process.wait_until(
            f"the registry at {address}",
            answers,
            [proc],
            lambda: [log],
            timeout_s=timeout_s,
            poll_s=0.05,
            retry_on=(FactoryError,),
        )
    except BaseException:
        server_process.stop(proc)
        raise
    return proc


def copy_base(source: str, target: str) -> dict[str, str]:
    """Copy the busybox base (index, manifests, blobs) between registries, unchanged.

    The index is put back with its original bytes, so digests are the same on both sides.
    Returns platform -> image manifest digest.
    """
    src, dst = RegistryClient(source), RegistryClient(target)
    media_type, _, index = src.get_manifest(BASE_REPOSITORY, BASE_TAG)
    if media_type not in INDEX_TYPES:
        msg = f"{source}/{BASE_REPOSITORY}:{BASE_TAG} is not a multi-arch index: run services up"
        raise FactoryError(msg)
    platforms = src.platforms(BASE_REPOSITORY, BASE_TAG)
    for digest in platforms.values():
        manifest_type, _, body = src.get_manifest(BASE_REPOSITORY, digest)
        manifest = json.loads(body)
        for blob in [manifest["config"], *manifest["layers"]]:
            dst.push_blob(BASE_REPOSITORY, src.get_blob(BASE_REPOSITORY, blob["digest"]))
        dst.put_manifest(BASE_REPOSITORY, digest, manifest_type, body)
    dst.put_manifest(BASE_REPOSITORY, BASE_TAG, media_type, index)
    return platforms


def store_copy(folder: Path, registry: str, copies: int = 1) -> Path:
    """The example store under `folder`, its bases pulled from `registry`; with `copies` > 1,
    each manifest also appears as `<id>_c2` ... `<id>_c<copies>`: the same recipe under another
    id, so another image to build (the id is in the Dockerfile and the build key) whose stable
    layers are the same."""
    root = folder / "store"
    shutil.copytree(EXAMPLE, root)
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    for base in data["bases"].values():
        _, repository = split_image(base["image"])
        base["image"] = f"{registry}/{repository}"
    manifests = data["manifests"]
    for manifest_id, manifest in list(manifests.items()):
        for n in range(2, copies + 1):
            manifests[f"{manifest_id}_c{n}"] = manifest
    path.write_text(json.dumps(data, indent=2))
    return path


@dataclass(frozen=True)
class Workspace:
    """One isolated Factory: store, registry, data dir and Dagster instance (engine per call)."""

    root: Path
    store: Path
    registry: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def env(self, docker_host: str) -> dict[str, str]:
        return {
            **os.environ,
            "DOCKER_HOST": docker_host,
            "FACTORY_REGISTRY": self.registry,
            "FACTORY_MANIFEST_STORE": str(self.store),
            "FACTORY_DATA_DIR": str(self.data_dir),
            "DAGSTER_HOME": str(self.root / "dagster"),
        }

    def factory(self, docker_host: str, *args: str, timeout: float = 1200) -> "Timed":
        """Run the `factory` CLI against this workspace and engine; raise when it fails."""
        started = time.monotonic()
        proc = subprocess.run(
            [str(FACTORY_CLI), *args],
            env=self.env(docker_host),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr
            msg = f"factory {' '.join(args)} failed ({proc.returncode}):\n{output}"
            raise FactoryError(msg)
        return Timed(seconds=seconds, output=proc.stdout)

    def records(self) -> list[CompatibilityRecord]:
        return list(LocalRecordStore(self.data_dir).records())

    def evidence_log(self, record: CompatibilityRecord) -> str:
        ref = record.evidence.get("log")
        path = Path(ref.uri.removeprefix("file://")) if ref else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def stable_snippets(self) -> list[str]:
        modules = self.store.parent / "modules"
        return [p.read_text() for name in STABLE_FRAGMENTS for p in (modules / name).glob("*")]


@dataclass(frozen=True)
class Timed:
    seconds: float
    output: str


@contextlib.contextmanager
def workspace(
    folder: Path, source_registry: str = DEFAULT_REGISTRY, copies: int = 1
) -> Iterator[Workspace]:
    """A fresh registry with only the base in it, and a store copy pointing at it (`copies`:
    see store_copy)."""
    with temp_registry(folder / "registry") as address:
        copy_base(source_registry, address)
        store = store_copy(folder, address, copies)
        yield Workspace(root=folder, store=store, registry=address)


def summarize(ws: Workspace, records: list[CompatibilityRecord]) -> dict:
    """Figures a phase reports, from its records and their evidence logs."""
    built = [r for r in records if r.image and r.image.rebuilt]
    steps = cached = run_total = run_cached = stable_total = stable_cached = 0
    snippets = ws.stable_snippets()
    for record in built:
        log = ws.evidence_log(record)
        steps += record.cache.steps
        cached += record.cache.cached
        runs = run_steps(log)
        run_total += len(runs)
        run_cached += sum(1 for s in runs if s.cached)
        stable = matching_steps(log, snippets)
        stable_total += len(stable)
        stable_cached += sum(1 for s in stable if s.cached)
    return {
        "combinations": len(records),
        "rebuilt": len(built),
        "statuses": dict(sorted(_count(r.status for r in records).items())),
        "build_s_sum": round(sum(r.timings_s.get("build", 0.0) for r in records), 2),
        "test_s_sum": round(sum(r.timings_s.get("test", 0.0) for r in records), 2),
        "steps": steps,
        "steps_cached": cached,
        "run_steps": run_total,
        "run_steps_cached": run_cached,
        "stable_steps": stable_total,
        "stable_steps_cached": stable_cached,
    }


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def rounds_parser(description: str) -> argparse.ArgumentParser:
    """The options of a benchmark that repeats rounds of parallel builds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    return parser


def repeat_rounds(repeat: int, one_round: Callable[[], T]) -> list[T]:
    """Each round's result, saying when each is done (a round takes minutes)."""
    results = []
    for i in range(repeat):
        results.append(one_round())
        print(f"round {i + 1}/{repeat} done", flush=True)
    return results


def busy_core_seconds() -> float:
    """CPU time the whole host has spent busy since boot (every core, every process: the engine,
    BuildKit, the registry and QEMU too), from /proc/stat; a difference of two readings is what a
    measured command cost the host."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


class HostClock:
    """Wall time and the host's 1-minute load average from a benchmark's start to its summary:
    other work on the host makes every figure slower."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.load_before = os.getloadavg()[0]

    def figures(self) -> dict:
        return {
            "total_s": round(time.monotonic() - self.started, 1),
            "loadavg_1m_before_after": [round(self.load_before, 2), round(os.getloadavg()[0], 2)],
        }
