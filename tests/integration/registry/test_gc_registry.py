"""`factory gc` on real registries: the shared one for tag deletion, a private one for blob GC.

Garbage collection is never run on the shared registry at 127.0.0.1:5000: it is serving other
tests and builds, and collecting under a running registry can corrupt their images (see
`factory.records.retention`). The blob test starts its own `docker-registry` on a free loopback
port with its own storage, stops it to collect, restarts it to check what is left, and stops it by
its PID (factory/services/server_process.py).
"""

import hashlib
import json
import os
import secrets
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from bench.isolated import serve_registry
from factory.cli.gc import gc_command
from factory.records.gc_apply import apply_gc, collect_garbage, local_registry_config
from factory.records.model import CompatibilityRecord, EvidenceRef, ImageInfo
from factory.records.retention import plan_gc
from factory.records.store import LocalRecordStore
from factory.registry.client import RegistryClient
from factory.services import server_process
from factory.services.embedded import docker_host
from factory_assets.retention import retention_job
from resources import DockerBuilder, ManifestStore, RecordStore, Registry
from tests.integration.registry.docker_images import delete_repository, docker, import_tiny

pytestmark = pytest.mark.integration

REGISTRY_START_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def docker_env(services) -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": docker_host(services)}


def push_tiny(env: dict[str, str], ref: str, content: str) -> None:
    import_tiny(env, ref, content)
    try:
        docker(env, "push", ref)
    finally:
        docker(env, "rmi", ref)


def make_record(manifest_id, registry, tag, build_key, digest, finished) -> CompatibilityRecord:
    stamp = finished.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return CompatibilityRecord(
        build_id=str(uuid.uuid4()),
        manifest_id=manifest_id,
        platform="linux/amd64",
        pool="amd64",
        status="pass",
        build_key=build_key,
        record_key=hashlib.sha256(build_key.encode()).hexdigest(),
        inputs={},
        image=ImageInfo(ref=f"{registry}/factory/{manifest_id}:{tag}", digest=digest),
        started_at=stamp,
        finished_at=stamp,
    )


def new_combination(
    registry: str, tmp_path: Path
) -> tuple[str, str, RegistryClient, Path, LocalRecordStore]:
    """A manifest id of this test's own, its repository, a client of `registry`, a data dir and
    its record store."""
    manifest_id = f"gc-test-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / "data"
    return (
        manifest_id,
        f"factory/{manifest_id}",
        RegistryClient(registry),
        data_dir,
        LocalRecordStore(data_dir),
    )


def push_history(env, client, store, manifest_id, count) -> list[tuple[str, str]]:
    """Push `count` images of one combination with records a day apart; (tag, digest), oldest
    first. Their evidence is 200+ days old, past the default 90-day retention."""
    now = datetime.now(UTC)
    pushed = []
    for i in range(count):
        build_key = hashlib.sha256(f"{manifest_id}/{i}".encode()).hexdigest()
        tag = f"linux_amd64-{build_key[:12]}"
        push_tiny(env, f"{client.address}/factory/{manifest_id}:{tag}", f"{manifest_id} {i}\n")
        digest = client.head_digest(f"factory/{manifest_id}", tag)
        assert digest is not None
        record = make_record(
            manifest_id, client.address, tag, build_key, digest, now - timedelta(days=210 - i)
        )
        uri, sha = store.put("evidence", record.build_id, f"log of build {i}\n".encode())
        record.evidence["log"] = EvidenceRef(uri=uri, sha256=sha)
        store.write_record(record)
        pushed.append((tag, digest))
    return pushed


def test_gc_dry_run_then_keep_two_on_the_shared_registry(services, docker_env, tmp_path):
    manifest_id, repository, client, data_dir, store = new_combination(services.registry, tmp_path)
    env = {"FACTORY_DATA_DIR": str(data_dir), "FACTORY_REGISTRY": services.registry}
    runner = CliRunner()
    try:
        pushed = push_history(docker_env, client, store, manifest_id, 4)
        cache_ref = f"{services.registry}/{repository}-cache:linux_amd64"
        push_tiny(docker_env, cache_ref, "cache\n")
        oldest, newest = pushed[:2], pushed[2:]
        build_ids = [r.build_id for r in sorted(store.records(), key=lambda r: r.finished_at)]

        dry = runner.invoke(gc_command, ["--dry-run", "--keep", "2", "--json"], env=env)
        assert dry.exit_code == 0, dry.output
        plan = json.loads(dry.stdout)["plan"]
        assert [(d["tags"], d["digest"]) for d in plan["deletions"]] == [
            ([tag], digest) for tag, digest in oldest
        ]
        # Evidence of all but the newest record is past 90 days.
        assert [(f["kind"], f["build_id"]) for f in plan["files"]] == [
            ("evidence", b) for b in build_ids[:3]
        ]
        for tag, digest in pushed:
            assert client.head_digest(repository, tag) == digest
        assert all(store.get("evidence", b) is not None for b in build_ids)

        real = runner.invoke(gc_command, ["--keep", "2"], env=env)
        assert real.exit_code == 0, real.output
        assert "removed 2 image manifests (2 tags) and 3 evidence files" in real.output
        # No local registry config in this data dir: nothing is collected on the shared one.
        assert "garbage-collect not run" in real.output
        for tag, digest in oldest:
            assert client.head_digest(repository, tag) is None
            assert client.head_digest(repository, digest) is None
        for tag, digest in newest:
            assert client.head_digest(repository, tag) == digest
        assert client.head_digest(f"{repository}-cache", "linux_amd64") is not None
        assert sorted(store.list_ids("record")) == sorted(build_ids)
        assert [b for b in build_ids if store.get("evidence", b) is not None] == build_ids[3:]

        again = runner.invoke(gc_command, ["--keep", "2", "--json"], env=env)
        assert json.loads(again.stdout)["plan"]["summary"]["manifests"] == 0
    finally:
        delete_repository(client, repository)
        delete_repository(client, f"{repository}-cache")


def test_retention_job_applies_the_same_gc_and_tags_the_run(services, docker_env, tmp_path):
    manifest_id, repository, client, data_dir, store = new_combination(services.registry, tmp_path)
    try:
        pushed = push_history(docker_env, client, store, manifest_id, 3)
        with dg.instance_for_test() as instance:
            result = retention_job.execute_in_process(
                instance=instance,
                resources={
                    "record_store": RecordStore(data_dir=str(data_dir)),
                    "registry": Registry(address=services.registry),
                    "docker_builder": DockerBuilder(),
                    "manifest_store": ManifestStore(path=str(services.manifest_store)),
                },
                # The shared engine and stack refs belong to other tests too: registry part only.
                run_config={
                    "ops": {
                        "retention_gc": {"config": {"keep": 1, "engine": False, "stacks": False}}
                    }
                },
            )
            assert result.success
            tags = instance.get_run_by_id(result.run_id).tags
        summary = result.output_for_node("retention_gc")
        assert (summary["manifests_deleted"], summary["files_removed"]) == (2, 2)
        assert tags["factory/gc_manifests_deleted"] == "2"
        assert tags["factory/gc_files_removed"] == "2"
        assert client.list_tags(repository) == [pushed[2][0]]
    finally:
        delete_repository(client, repository)


def test_collect_refuses_beside_the_running_shared_registry(services):
    config = local_registry_config(services.data_dir, services.registry)
    if config is None:
        pytest.skip(f"{services.registry} was not started by factory services: no config here")
    outcome = collect_garbage(config)
    assert not outcome.ran
    assert "accepts pushes" in outcome.detail and "factory gc --collect-only" in outcome.detail


# -- a private registry for blob garbage collection -----------------------------------------------


class OwnRegistry:
    """A `docker-registry serve` of this test's own, configured like the one factory starts."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.storage = root / "storage"
        self.config = root / "config.yml"
        self.log = root / "registry.log"
        self.address = f"127.0.0.1:{server_process.free_port()}"
        self.proc: subprocess.Popen | None = None
        config = {
            "version": "0.1",
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {"addr": self.address, "secret": secrets.token_hex(16)},
        }
        self.config.write_text(json.dumps(config, indent=2))

    def start(self) -> None:
        self.proc = serve_registry(self.config, self.address, self.log, REGISTRY_START_TIMEOUT_S)

    def stop(self) -> None:
        if self.proc is not None:
            server_process.stop(self.proc, timeout_s=20)
        self.proc = None

    def blob_file(self, digest: str) -> Path:
        hex_digest = digest.removeprefix("sha256:")
        return (
            self.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
        )


@pytest.fixture
def own_registry(tmp_path):
    registry = OwnRegistry(tmp_path / "own-registry")
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


def blobs_of(client: RegistryClient, repository: str, tag: str) -> list[str]:
    _, _, body = client.get_manifest(repository, tag)
    manifest = json.loads(body)
    return [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]


def test_gc_frees_blobs_only_with_the_registry_stopped(own_registry, docker_env, tmp_path):
    address = own_registry.address
    manifest_id, repository, client, data_dir, store = new_combination(address, tmp_path)
    pushed = push_history(docker_env, client, store, manifest_id, 3)
    blobs = {tag: blobs_of(client, repository, tag) for tag, _ in pushed}
    doomed = [b for tag, _ in pushed[:2] for b in blobs[tag]]
    kept_tag = pushed[2][0]

    plan = plan_gc(store.records(), client, keep=1, data_dir=data_dir)
    assert [d.tags[0] for d in plan.deletions] == [tag for tag, _ in pushed[:2]]
    result = apply_gc(plan, client, data_dir, registry_config=own_registry.config)
    # Deleted through the API, but the registry is serving: blobs stay, and it says what to do.
    assert result.manifests_deleted == 2
    assert result.collect is not None and not result.collect.ran
    assert "accepts pushes" in result.collect.detail
    assert all(own_registry.blob_file(b).exists() for b in doomed)

    own_registry.stop()
    collected = collect_garbage(own_registry.config)
    assert collected.ran, collected.detail
    assert collected.blobs_deleted >= len(doomed)
    assert collected.bytes_freed > 0
    assert not any(own_registry.blob_file(b).exists() for b in doomed)
    assert all(own_registry.blob_file(b).exists() for b in blobs[kept_tag])

    # Restarted (a fresh blob cache), the registry serves the kept image whole and nothing else.
    own_registry.start()
    assert client.head_digest(repository, kept_tag) == pushed[2][1]
    for digest in blobs[kept_tag]:
        assert client.get_blob(repository, digest)
    assert not any(client.blob_exists(repository, b) for b in doomed)
    assert client.list_tags(repository) == [kept_tag]
