"""Retention planning as a truth table, on an in-memory registry with RegistryClient's names."""

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from factory.errors import RegistryError
from factory.records.gc_apply import apply_gc, config_address, is_read_only, local_registry_config
from factory.records.model import CompatibilityRecord, EvidenceRef, ImageInfo
from factory.records.retention import plan_gc
from factory.records.store import LocalRecordStore
from factory.registry.manifests import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
REPO = "factory/m"


class FakeRegistry:
    """Manifests and tags in memory; `delete_manifest` drops every tag of the digest, as
    distribution does."""

    def __init__(self):
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.listed: list[str] = []
        self.deleted: list[tuple[str, str]] = []
        self.unreadable: set[tuple[str, str]] = set()

    def _put(self, repository: str, tag: str, media_type: str, body: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[(repository, digest)] = (media_type, body)
        self.tags.setdefault(repository, {})[tag] = digest
        return digest

    def push_image(self, repository: str, tag: str, content: str | None = None) -> str:
        body = json.dumps({"mediaType": DOCKER_MANIFEST, "content": content or tag}).encode()
        return self._put(repository, tag, DOCKER_MANIFEST, body)

    def push_index(self, repository: str, tag: str, digests: list[str], media_type=OCI_INDEX):
        entries = [{"digest": d, "mediaType": DOCKER_MANIFEST, "size": 1} for d in digests]
        body = json.dumps({"mediaType": media_type, "manifests": entries}).encode()
        return self._put(repository, tag, media_type, body)

    # -- RegistryClient's interface -------------------------------------------------------------

    def list_tags(self, repository: str) -> list[str]:
        self.listed.append(repository)
        return sorted(self.tags.get(repository, {}))

    def head_digest(self, repository: str, reference: str) -> str | None:
        if reference.startswith("sha256:"):
            return reference if (repository, reference) in self.manifests else None
        return self.tags.get(repository, {}).get(reference)

    def get_manifest(self, repository: str, reference: str) -> tuple[str, str, bytes]:
        if (repository, reference) in self.unreadable:
            msg = f"{repository}:{reference} is a schema1 manifest"
            raise RegistryError(msg)
        digest = self.head_digest(repository, reference)
        if digest is None:
            msg = f"{repository}:{reference} does not exist"
            raise RegistryError(msg)
        media_type, body = self.manifests[(repository, digest)]
        return media_type, digest, body

    def delete_manifest(self, repository: str, digest: str) -> None:
        self.deleted.append((repository, digest))
        self.manifests.pop((repository, digest), None)
        tags = self.tags.get(repository, {})
        for tag in [t for t, d in tags.items() if d == digest]:
            del tags[tag]


def key(n: int, *, prefix: str = "") -> str:
    return (prefix + f"{n:02x}" * 32)[:64]


def make_record(
    n: int,
    *,
    platform: str = "linux/amd64",
    age: timedelta = timedelta(days=1),
    digest: str | None = None,
    build: str | None = None,
    manifest_id: str = "m",
) -> CompatibilityRecord:
    finished = (NOW - age).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    build_key = build or key(n)
    slug = platform.replace("/", "_").replace("+", "_")
    evidence = {
        "log": EvidenceRef(uri=f"file:///x/evidence/b{n}.log", sha256="0" * 64),
        "sbom": EvidenceRef(uri=f"file:///x/sbom/b{n}.cdx.json", sha256="0" * 64),
        "provenance": None,
    }
    return CompatibilityRecord(
        build_id=f"b{n}",
        manifest_id=manifest_id,
        platform=platform,
        pool="amd64",
        status="pass",
        build_key=build_key,
        record_key=key(n, prefix="f"),
        inputs={},
        image=ImageInfo(
            ref=f"127.0.0.1:5000/factory/{manifest_id}:{slug}-{build_key[:12]}", digest=digest
        ),
        evidence=evidence,
        started_at=finished,
        finished_at=finished,
    )


def history(registry: FakeRegistry, count: int, *, platform: str = "linux/amd64", start: int = 0):
    """`count` builds of one combination, one hour apart, oldest first, each with its tag."""
    slug = platform.replace("/", "_").replace("+", "_")
    records = []
    for i in range(start, start + count):
        tag = f"{slug}-{key(i)[:12]}"
        digest = registry.push_image(REPO, tag)
        age = timedelta(hours=100 - i)
        records.append(make_record(i, platform=platform, age=age, digest=digest))
    return records


def deleted_tags(plan) -> list[str]:
    return [tag for deletion in plan.deletions for tag in deletion.tags]


def test_keeps_the_newest_n_per_combination_and_deletes_the_oldest_first():
    registry = FakeRegistry()
    records = history(registry, 4)
    plan = plan_gc(records, registry, keep=2, now=NOW)
    assert deleted_tags(plan) == [f"linux_amd64-{key(0)[:12]}", f"linux_amd64-{key(1)[:12]}"]
    assert [d.digest for d in plan.deletions] == [records[0].image.digest, records[1].image.digest]
    assert registry.deleted == []  # planning changes nothing
    assert plan.summary()["manifests"] == 2


@pytest.mark.parametrize(("keep", "deleted"), [(1, 3), (2, 2), (3, 1), (4, 0), (10, 0)])
def test_keep_counts(keep, deleted):
    registry = FakeRegistry()
    plan = plan_gc(history(registry, 4), registry, keep=keep, now=NOW)
    assert len(plan.deletions) == deleted


def test_each_platform_keeps_its_own_n():
    registry = FakeRegistry()
    records = history(registry, 3) + history(registry, 1, platform="linux/arm64", start=10)
    plan = plan_gc(records, registry, keep=1, now=NOW)
    assert deleted_tags(plan) == [f"linux_amd64-{key(0)[:12]}", f"linux_amd64-{key(1)[:12]}"]


def test_ordering_follows_the_newest_record_of_each_tag():
    registry = FakeRegistry()
    records = history(registry, 3)
    # The oldest image was re-tested most recently: it is the current one.
    retest = make_record(99, age=timedelta(minutes=5), build=key(0), digest=records[0].image.digest)
    plan = plan_gc([*records, retest], registry, keep=2, now=NOW)
    assert deleted_tags(plan) == [f"linux_amd64-{key(1)[:12]}"]


def test_never_touches_cache_repositories_or_other_tags():
    registry = FakeRegistry()
    records = history(registry, 3)
    registry.push_image("factory/m-cache", "linux_amd64")
    registry.push_image(REPO, "nightly", content="by hand")
    registry.push_image(REPO, "linux_amd64-notakeyatall")
    plan = plan_gc(records, registry, keep=1, now=NOW)
    assert registry.listed == [REPO]
    assert all(tag.startswith("linux_amd64-") and len(tag) == 24 for tag in deleted_tags(plan))
    assert len(plan.deletions) == 2


@pytest.mark.parametrize(
    ("index_tag", "media_type"),
    [
        # What factory.registry.publish tags: `release-<12 hex>` looks like a build tag but names
        # no slug.
        ("release-0123456789ab", DOCKER_MANIFEST_LIST),
        ("latest", OCI_INDEX),
    ],
)
def test_an_image_in_a_published_index_is_kept(index_tag, media_type):
    registry = FakeRegistry()
    records = history(registry, 4)
    registry.push_index(REPO, index_tag, [records[0].image.digest], media_type=media_type)
    plan = plan_gc(records, registry, keep=2, now=NOW)
    assert deleted_tags(plan) == [f"linux_amd64-{key(1)[:12]}"]
    kept = {k.tag: k.reason for k in plan.kept}
    assert kept == {f"linux_amd64-{key(0)[:12]}": f"pinned by tag {index_tag}"}
    assert plan.releases == ["b0"]


def test_an_image_tagged_latest_directly_is_kept():
    registry = FakeRegistry()
    records = history(registry, 3)
    registry.tags[REPO]["latest"] = records[0].image.digest
    plan = plan_gc(records, registry, keep=1, now=NOW)
    assert deleted_tags(plan) == [f"linux_amd64-{key(1)[:12]}"]


def test_the_newest_records_image_is_kept_even_beyond_keep():
    registry = FakeRegistry()
    records = history(registry, 3)
    # The newest record says its image is the oldest tag's digest (same bytes, pushed again).
    newest = make_record(7, age=timedelta(minutes=1), digest=records[0].image.digest)
    plan = plan_gc([*records, newest], registry, keep=1, now=NOW)
    assert deleted_tags(plan) == [f"linux_amd64-{key(1)[:12]}"]
    assert [(k.tag, k.reason) for k in plan.kept] == [
        (f"linux_amd64-{key(0)[:12]}", "newest linux/amd64 record's image")
    ]


def test_a_digest_shared_with_a_kept_tag_is_kept():
    registry = FakeRegistry()
    records = history(registry, 3)
    # amd64 and amd64+gpu built the same bytes: the oldest amd64 tag and a kept gpu tag share it.
    same = records[0].image.digest
    registry.tags[REPO][f"linux_amd64_gpu-{key(5)[:12]}"] = same
    newer = registry.push_image(REPO, f"linux_amd64_gpu-{key(6)[:12]}")
    gpu = [
        make_record(5, platform="linux/amd64+gpu", age=timedelta(hours=50), digest=same),
        make_record(6, platform="linux/amd64+gpu", age=timedelta(hours=1), digest=newer),
    ]
    plan = plan_gc([*records, *gpu], registry, keep=2, now=NOW)
    assert plan.deletions == []
    assert [(k.tag, k.reason) for k in plan.kept] == [
        (f"linux_amd64-{key(0)[:12]}", f"same image as kept tag linux_amd64_gpu-{key(5)[:12]}")
    ]


def test_two_old_tags_of_one_digest_are_one_deletion():
    registry = FakeRegistry()
    records = history(registry, 3)
    registry.tags[REPO][f"linux_amd64-{key(1)[:12]}"] = records[0].image.digest
    plan = plan_gc(records, registry, keep=1, now=NOW)
    assert len(plan.deletions) == 1
    assert plan.deletions[0].tags == (f"linux_amd64-{key(0)[:12]}", f"linux_amd64-{key(1)[:12]}")


def test_tags_without_a_record_are_kept():
    registry = FakeRegistry()
    records = history(registry, 2)
    registry.push_image(REPO, f"linux_amd64-{key(42)[:12]}")
    plan = plan_gc(records, registry, keep=1, now=NOW)
    assert deleted_tags(plan) == [f"linux_amd64-{key(0)[:12]}"]
    assert [(k.tag, "no record" in k.reason) for k in plan.kept] == [
        (f"linux_amd64-{key(42)[:12]}", True)
    ]


def test_an_unreadable_tag_leaves_the_repository_and_its_evidence_alone():
    registry = FakeRegistry()
    records = history(registry, 3)
    old = make_record(9, age=timedelta(days=200), digest=None)
    registry.push_image(REPO, "legacy")
    registry.unreadable.add((REPO, "legacy"))
    plan = plan_gc([*records, old], registry, keep=1, evidence_days=90, now=NOW)
    assert (plan.deletions, plan.files) == ([], [])
    assert len(plan.warnings) == 1 and "factory/m left alone" in plan.warnings[0]


def test_keep_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        plan_gc([], FakeRegistry(), keep=0, now=NOW)


# -- evidence -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age_days", "released", "newest", "removed"),
    [
        (91, False, False, True),  # old: removed
        (89, False, False, False),  # recent: kept
        (91, True, False, False),  # release: kept
        (91, False, True, False),  # the combination's newest record: kept
    ],
)
def test_evidence_truth_table(age_days, released, newest, removed):
    registry = FakeRegistry()
    digest = registry.push_image(REPO, f"linux_amd64-{key(1)[:12]}")
    subject = make_record(1, age=timedelta(days=age_days), digest=digest)
    records = [subject]
    if not newest:
        later = registry.push_image(REPO, f"linux_amd64-{key(2)[:12]}")
        records.append(make_record(2, age=timedelta(days=1), digest=later))
    if released:
        registry.push_index(REPO, "latest", [digest])
    plan = plan_gc(records, registry, keep=5, evidence_days=90, now=NOW)
    listed = [(f.kind, f.build_id) for f in plan.files]
    # The record names a log and an SBOM (no provenance); records themselves are never listed.
    assert listed == ([("evidence", "b1"), ("sbom", "b1")] if removed else [])


def test_with_a_data_dir_only_existing_files_are_listed(tmp_path):
    registry = FakeRegistry()
    records = history(registry, 2)
    old = make_record(5, age=timedelta(days=120), digest=None)
    store = LocalRecordStore(tmp_path)
    store.put("provenance", "b5", b"{}")
    plan = plan_gc([old, *records], registry, keep=5, now=NOW, data_dir=tmp_path)
    assert [(f.kind, f.build_id) for f in plan.files] == [("provenance", "b5")]


def test_apply_deletes_manifests_and_files_and_keeps_records(tmp_path):
    registry = FakeRegistry()
    records = history(registry, 3)
    records[0] = make_record(0, age=timedelta(days=100), digest=records[0].image.digest)
    store = LocalRecordStore(tmp_path)
    for record in records:
        store.write_record(record)
        store.put("evidence", record.build_id, b"log " * 10)
        store.put("sbom", record.build_id, b"{}")
    plan = plan_gc(store.records(), registry, keep=2, now=NOW, data_dir=tmp_path)
    result = apply_gc(plan, registry, tmp_path)

    assert registry.deleted == [(REPO, records[0].image.digest)]
    assert registry.head_digest(REPO, f"linux_amd64-{key(0)[:12]}") is None
    assert (result.manifests_deleted, result.files_removed, result.bytes_removed) == (1, 2, 42)
    assert result.collect is None
    assert store.get("evidence", "b0") is None and store.get("sbom", "b0") is None
    assert store.get("evidence", "b1") is not None
    assert sorted(store.list_ids("record")) == ["b0", "b1", "b2"]
    # A second gc finds nothing left to do.
    again = plan_gc(store.records(), registry, keep=2, now=NOW, data_dir=tmp_path)
    assert (again.deletions, again.files) == ([], [])


# -- registry config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        (":5000", "127.0.0.1:5000"),
        ("0.0.0.0:5001", "127.0.0.1:5001"),
        ("", None),
    ],
)
def test_config_address(addr, expected):
    assert config_address({"http": {"addr": addr}}) == expected


def test_read_only_mode():
    assert not is_read_only({"storage": {"filesystem": {}}})
    assert is_read_only({"storage": {"maintenance": {"readonly": {"enabled": True}}}})


def test_local_registry_config_matches_the_address(tmp_path):
    assert local_registry_config(tmp_path, "127.0.0.1:5000") is None
    config = tmp_path / "registry" / "config.yml"
    config.parent.mkdir()
    config.write_text(json.dumps({"http": {"addr": "127.0.0.1:5000"}}))
    assert local_registry_config(tmp_path, "127.0.0.1:5000") == config
    assert local_registry_config(tmp_path, "localhost:5000") == config
    assert local_registry_config(tmp_path, "registry.example.com") is None
    config.write_text("version: 0.1\nhttp:\n  addr: 127.0.0.1:5000\n")  # hand-written YAML
    assert local_registry_config(tmp_path, "127.0.0.1:5000") == config
