"""Twenty materializations at once, in separate processes, into one record store: none torn.

Each worker process has its own Dagster instance (as separate run workers do) but all of them
write records, errors and evidence into the same data dir, where only the write-once store's
temp file + hard link keeps a reader from seeing half a file and two writers from clobbering one
another. A barrier releases all twenty materializations together, and the test checks that they
really overlapped before it checks what they left.
"""

import hashlib
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pytest

from factory.records.model import CompatibilityRecord
from tests.integration.stores import example_store_copy, manifest

pytestmark = pytest.mark.integration
WORKERS = 20
BARRIER_TIMEOUT_S = 300


def materialize_one(
    store_path: str, data_dir: str, registry: str, manifest_id: str, barrier
) -> tuple[bool, str, float, float]:
    """In a fresh process: one amd64 chain for one partition; (success, run_id, start, end)."""
    import dagster as dg

    from factory.platforms import BY_NAME
    from factory_assets.partitions import partitions_name
    from factory_assets.platform_chain import build_platform_chain
    from resources import DockerBuilder, ManifestStore, RecordStore, Registry

    amd64 = BY_NAME["linux/amd64"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(partitions_name(amd64.slug), [manifest_id])
        assets = build_platform_chain(amd64)
        barrier.wait(timeout=BARRIER_TIMEOUT_S)  # everyone imported and ready: go together
        started = time.time()
        result = dg.materialize(
            assets,
            partition_key=manifest_id,
            instance=instance,
            resources={
                "manifest_store": ManifestStore(path=store_path),
                "docker_builder": DockerBuilder(),
                "registry": Registry(address=registry),
                "record_store": RecordStore(data_dir=data_dir),
            },
            raise_on_error=False,
        )
        return result.success, result.run_id, started, time.time()


def sha256_of(uri: str) -> str:
    return hashlib.sha256(Path(urlparse(uri).path).read_bytes()).hexdigest()


def test_twenty_concurrent_materializations_leave_twenty_complete_records(services, tmp_path):
    ids = [f"conc-{i:02d}" for i in range(WORKERS)]
    store = example_store_copy(tmp_path, {mid: manifest() for mid in ids})
    data = tmp_path / "data"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(WORKERS, mp_context=context) as pool:
        barrier = manager.Barrier(WORKERS)
        futures = [
            pool.submit(materialize_one, str(store), str(data), services.registry, mid, barrier)
            for mid in ids
        ]
        outcomes = [f.result() for f in futures]

    assert [ok for ok, *_ in outcomes] == [True] * WORKERS
    starts, ends = [o[2] for o in outcomes], [o[3] for o in outcomes]
    assert max(starts) < min(ends), "the materializations did not all run at the same time"

    files = sorted((data / "records").iterdir())
    assert len(files) == WORKERS and not [f for f in files if f.name.startswith(".")]
    records = [CompatibilityRecord.model_validate_json(f.read_bytes()) for f in files]
    assert {f.stem for f in files} == {r.build_id for r in records}
    assert len({r.build_id for r in records}) == WORKERS
    assert sorted(r.manifest_id for r in records) == ids
    assert {r.dagster.run_id for r in records} == {run_id for _, run_id, *_ in outcomes}
    for record in records:
        assert record.status == "pass", record.error
        for kind in ("log", "sbom", "provenance"):
            evidence = record.evidence[kind]
            assert evidence is not None and sha256_of(evidence.uri) == evidence.sha256, kind
    assert not (data / "errors").exists() or not list((data / "errors").iterdir())
