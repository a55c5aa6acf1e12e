"""gc of quarantined tags and unused stack cache refs, on test_retention's in-memory registry."""

import json
from datetime import timedelta

import pytest

from factory.build.prewarm import distinct_stacks
from factory.build.stack_gc import plan_stack_gc
from factory.errors import InvalidNameError, RegistryError
from factory.records.model import QuarantineInfo
from factory.records.retention import plan_gc
from factory.registry.manifests import DOCKER_MANIFEST
from factory.registry.names import sha256_digest
from factory.settings import DEFAULT_MANIFEST_STORE
from factory.store.load import load_store
from factory.supply_chain.quarantine import quarantine_ref, quarantine_repository
from tests.unit.records.test_retention import NOW, FakeRegistry, make_record

QREPO = "factory-quarantine/m"


def failed(n: int, *, age_days: int, platform: str = "linux/amd64"):
    record = make_record(n, age=timedelta(days=age_days), platform=platform)
    tag = record.image.ref.rsplit(":", 1)[1]
    return record.model_copy(
        update={
            "status": "fail",
            "quarantine": QuarantineInfo(ref=f"127.0.0.1:5000/{QREPO}:{tag}"),
        }
    ), tag


def test_quarantine_names():
    assert quarantine_repository("factory/llm_factory") == "factory-quarantine/llm_factory"
    assert quarantine_ref("127.0.0.1:5000/factory/m:linux_amd64-0123456789ab") == (
        "127.0.0.1:5000/factory-quarantine/m:linux_amd64-0123456789ab"
    )
    for bad in ("factory/base/busybox", "other/m", "factory/../m", "factory/m-cache/x"):
        with pytest.raises(InvalidNameError):
            quarantine_repository(bad)


def test_gc_keeps_the_newest_quarantined_tags_per_combination():
    registry = FakeRegistry()
    records = []
    for n, age in ((1, 9), (2, 5), (3, 2)):
        record, tag = failed(n, age_days=age)
        registry.push_image(QREPO, tag)
        records.append(record)
    arm, arm_tag = failed(4, age_days=30, platform="linux/arm64")
    registry.push_image(QREPO, arm_tag)
    registry.push_image(QREPO, "linux_amd64-" + "e" * 12)  # no record names it: in flight
    plan = plan_gc([*records, arm], registry, keep=2, now=NOW)
    quarantined = [d for d in plan.deletions if d.repository == QREPO]
    assert [(d.tags, d.platforms) for d in quarantined] == [
        ((records[0].image.ref.rsplit(":", 1)[1],), ("linux/amd64",))
    ]
    assert quarantined[0].digest == registry.head_digest(QREPO, quarantined[0].tags[0])


def test_a_quarantined_digest_shared_with_a_kept_tag_stays():
    registry = FakeRegistry()
    old, old_tag = failed(1, age_days=9)
    new, new_tag = failed(2, age_days=1)
    registry.push_image(QREPO, old_tag, content="same")
    registry.push_image(QREPO, new_tag, content="same")
    plan = plan_gc([old, new], registry, keep=1, now=NOW)
    assert [d for d in plan.deletions if d.repository == QREPO] == []


class CatalogRegistry(FakeRegistry):
    """FakeRegistry with a catalog and image configs (for stack creation times)."""

    def __init__(self, catalog_error: Exception | None = None):
        super().__init__()
        self.blobs: dict[str, bytes] = {}
        self.catalog_error = catalog_error

    def catalog(self) -> list[str]:
        if self.catalog_error:
            raise self.catalog_error
        return sorted(self.tags)

    def push_stack(self, repository: str, tag: str, created: str) -> str:
        config = json.dumps({"created": created, "architecture": "amd64"}).encode()
        self.blobs[sha256_digest(config)] = config
        body = json.dumps(
            {
                "mediaType": DOCKER_MANIFEST,
                "config": {"digest": sha256_digest(config), "size": len(config)},
                "layers": [],
            }
        ).encode()
        return self._put(repository, tag, DOCKER_MANIFEST, body)

    def get_blob(self, repository: str, digest: str, *, max_bytes: int = 0) -> bytes:
        return self.blobs[digest]


def test_stack_gc_drops_unused_old_stacks_only():
    store = load_store(DEFAULT_MANIFEST_STORE)
    [used, *_] = [s.key for s in distinct_stacks(store)]
    registry = CatalogRegistry()
    registry.push_stack(f"factory/stack-{used}-cache", "linux_amd64", "2020-01-01T00:00:00Z")
    old = registry.push_stack(
        "factory/stack-0123456789ab-cache", "linux_amd64", "2020-01-01T00:00:00Z"
    )
    registry.push_stack("factory/stack-0123456789ab-cache", "linux_arm64", "2020-01-02T00:00:00Z")
    fresh_at = (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    registry.push_stack("factory/stack-abcdefabcdef-cache", "linux_amd64", fresh_at)
    registry.push_image("factory/stack-looking-cache", "linux_amd64")  # not a stack name
    plan = plan_gc([], registry, now=NOW)
    plan_stack_gc(plan, store, registry)
    assert [(d.repository, d.tags) for d in plan.deletions] == sorted(
        [
            ("factory/stack-0123456789ab-cache", ("linux_amd64",)),
            ("factory/stack-0123456789ab-cache", ("linux_arm64",)),
        ],
        key=lambda t: registry.head_digest(*t[0:1], t[1][0]),
    )
    assert old in {d.digest for d in plan.deletions}
    assert "no manifest of the store uses it" in plan.lines()[0]
    [kept] = plan.kept
    assert kept.repository == "factory/stack-abcdefabcdef-cache" and "within 24.0 h" in kept.reason


def test_stack_gc_leaves_everything_when_the_catalog_cannot_be_read():
    registry = CatalogRegistry(catalog_error=RegistryError("catalog: HTTP 401"))
    plan = plan_gc([], registry, now=NOW)
    plan_stack_gc(plan, load_store(DEFAULT_MANIFEST_STORE), registry)
    assert plan.deletions == [] and "catalog cannot be read" in plan.warnings[0]
