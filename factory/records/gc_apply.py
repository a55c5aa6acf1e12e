"""Carrying out a gc plan (factory/records/retention.py decides it): deleting its image manifests
by digest, removing its evidence files, then collecting the registry's blobs.

Blobs only leave the registry's disk when `docker-registry garbage-collect` runs (FACTS.md).
Distribution's garbage collector is stop-the-world: it must run with the registry stopped or in
read-only mode (distribution docs, "Garbage collection"), or it can delete the layers of an image
being pushed. The registry Factory starts also keeps an in-memory blob descriptor cache, so after
a collection it would keep answering "exists" for deleted layers until restarted, and a later push
of an identical layer would be skipped by the client and leave a broken image (distribution
issue #1939). `collect_garbage` therefore refuses to run while the registry serving the config
answers and is not read-only; the next step is printed instead.
"""

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from factory.errors import FactoryError, ServiceError
from factory.records.retention import GcPlan
from factory.records.store import LocalRecordStore
from factory.registry.client import RegistryClient
from factory.safe_json import UnreadableEntryError, parse_json, read_bytes

REGISTRY_BINARY = "docker-registry"
COLLECT_TIMEOUT_S = 1800.0
PROBE_TIMEOUT_S = 2.0
OUTPUT_TAIL_LINES = 20


@dataclass(frozen=True)
class CollectResult:
    """What `docker-registry garbage-collect` did, or why it did not run."""

    ran: bool
    detail: str
    blobs_deleted: int = 0
    bytes_freed: int = 0
    output_tail: str = ""


@dataclass(frozen=True)
class GcResult:
    """What `apply_gc` removed."""

    manifests_deleted: int
    files_removed: int
    bytes_removed: int
    collect: CollectResult | None

    def summary(self) -> dict:
        return {
            "manifests_deleted": self.manifests_deleted,
            "files_removed": self.files_removed,
            "file_bytes_removed": self.bytes_removed,
            "collect_ran": bool(self.collect and self.collect.ran),
            "blobs_deleted": self.collect.blobs_deleted if self.collect else 0,
            "blob_bytes_freed": self.collect.bytes_freed if self.collect else 0,
        }


def apply_gc(
    plan: GcPlan,
    registry_client,
    data_dir: Path,
    *,
    registry_config: Path | None = None,
    records_index=None,
) -> GcResult:
    """Delete the plan's manifests by digest, remove its files, then collect the registry's blobs.

    Apply a fresh plan: the plan was true when it was made. Files are found by the record store
    layout under `data_dir`, not by the URIs in records, so a gc never removes anything outside
    it. With `registry_config`, `collect_garbage` runs when that is safe (see the module).
    """
    for deletion in plan.deletions:
        registry_client.delete_manifest(deletion.repository, deletion.digest)
    store = LocalRecordStore(data_dir)
    removed = freed = 0
    for item in plan.files:
        path = store.path(item.kind, item.build_id)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
        freed += size
    if records_index is not None and plan.files:
        # Later plans need not look at these records again (factory.records.gc_source).
        records_index.mark_evidence_removed(item.build_id for item in plan.files)
    collect = collect_garbage(registry_config) if registry_config is not None else None
    return GcResult(
        manifests_deleted=len(plan.deletions),
        files_removed=removed,
        bytes_removed=freed,
        collect=collect,
    )


def local_registry_config(data_dir: Path, registry: str) -> Path | None:
    """The config of the registry `factory services up` started, if it serves `registry`.

    `<data_dir>/registry/config.yml` (see `factory.services.embedded`); None when there is none or
    it belongs to another address, since collecting that storage would not free `registry`'s blobs.
    """
    path = Path(data_dir) / "registry" / "config.yml"
    if not path.is_file():
        return None
    address = config_address(read_registry_config(path))
    wanted = registry.split("://", 1)[-1].rstrip("/").replace("localhost", "127.0.0.1", 1)
    return path if address == wanted else None


# A distribution config is a few hundred bytes; anything this large is not one.
MAX_CONFIG_BYTES = 1024 * 1024


def read_registry_config(config: Path) -> dict:
    """A distribution config file as a dict (Factory writes JSON, which YAML also reads).

    Read as every file under the data dir is (`factory.safe_json`): a regular file of at most
    MAX_CONFIG_BYTES, a symbolic link followed only within its folder.
    """
    import yaml  # PyYAML comes with Dagster; only needed for hand-written YAML configs

    try:
        data = read_bytes(config, root=Path(config).parent, max_bytes=MAX_CONFIG_BYTES)
    except UnreadableEntryError as exc:
        msg = f"cannot read the registry config {config}: it {exc.reason}"
        raise ServiceError(msg) from None
    except OSError as exc:
        msg = f"cannot read the registry config {config}: {exc}"
        raise ServiceError(msg) from exc
    try:
        value = parse_json(data, config)
    except UnreadableEntryError:
        value = yaml.safe_load(data)
    if not isinstance(value, dict):
        msg = f"{config} is not a registry config (expected a mapping at the top)"
        raise ServiceError(msg)
    return value


def config_address(config: dict) -> str | None:
    """Where the registry of a config listens, as a loopback-reachable `host:port`."""
    addr = str((config.get("http") or {}).get("addr") or "")
    if not addr:
        return None
    host, _, port = addr.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def is_read_only(config: dict) -> bool:
    """Whether the config puts the registry in maintenance read-only mode."""
    storage = config.get("storage") or {}
    readonly = ((storage.get("maintenance") or {}).get("readonly")) or {}
    return bool(readonly.get("enabled"))


def _storage_bytes(config: dict) -> int | None:
    root = ((config.get("storage") or {}).get("filesystem") or {}).get("rootdirectory")
    if not root or not Path(root).is_dir():
        return None
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def collect_garbage(config_path: Path, *, dry_run: bool = False) -> CollectResult:
    """Run `docker-registry garbage-collect CONFIG` when no writable registry serves CONFIG.

    A dry run only reads, so it also runs beside a serving registry. Never with
    `--delete-untagged`: the per-platform manifests of a published index are untagged, and
    distribution 2.8 would delete them.
    """
    config = read_registry_config(config_path)
    address = config_address(config)
    if address and not dry_run and not is_read_only(config):
        try:
            RegistryClient(address, timeout=PROBE_TIMEOUT_S).ping()
            running = True
        except FactoryError:
            running = False
        if running:
            detail = (
                f"blobs not collected: the registry at {address} serves {config_path} and accepts "
                "pushes, and collecting under it can corrupt images. Stop it (`factory services "
                f"down`), run `factory gc --collect-only` (or `{REGISTRY_BINARY} "
                f"garbage-collect {config_path}`), then `factory services up`"
            )
            return CollectResult(ran=False, detail=detail)
    if shutil.which(REGISTRY_BINARY) is None:
        msg = f"`{REGISTRY_BINARY}` is not installed: `apt-get install docker-registry`"
        raise ServiceError(msg)
    argv = [REGISTRY_BINARY, "garbage-collect", str(config_path)]
    if dry_run:
        argv.insert(2, "--dry-run")
    before = _storage_bytes(config)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COLLECT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        msg = f"`{' '.join(argv)}` did not finish within {COLLECT_TIMEOUT_S:.0f} s"
        raise ServiceError(msg) from exc
    output = (done.stdout + done.stderr).strip()
    tail = "\n".join(output.splitlines()[-OUTPUT_TAIL_LINES:])
    if done.returncode != 0:
        msg = f"`{' '.join(argv)}` failed (exit {done.returncode}):\n{tail}"
        raise ServiceError(msg)
    blobs = sum(1 for line in output.splitlines() if "blob eligible for deletion" in line)
    after = _storage_bytes(config)
    freed = before - after if before is not None and after is not None else 0
    verb = "would delete" if dry_run else "deleted"
    return CollectResult(
        ran=True,
        detail=f"garbage-collect {verb} {blobs} blobs ({freed} bytes freed)",
        blobs_deleted=blobs,
        bytes_freed=freed,
        output_tail=tail,
    )
