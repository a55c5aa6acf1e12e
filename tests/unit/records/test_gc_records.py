"""gc from the records index plans exactly what gc from every record plans."""

from datetime import timedelta

from factory.records.gc_source import IndexedRecords
from factory.records.index import open_index
from factory.records.retention import plan_gc
from factory.records.store import LocalRecordStore
from tests.unit.records.test_retention import NOW, REPO, FakeRegistry, history, key, make_record


def scenario(registry: FakeRegistry) -> list:
    """Tags beyond keep on two platforms, a release, old evidence, a manifest without images."""
    records = history(registry, 7) + history(registry, 3, platform="linux/arm64", start=20)
    registry.push_index(REPO, "release-1", [registry.tags[REPO][f"linux_amd64-{key(2)[:12]}"]])
    records += [
        make_record(40 + n, age=timedelta(days=100 + n), manifest_id="old") for n in range(3)
    ]
    records.append(make_record(50, age=timedelta(days=120), digest=None))
    return records


def indexed(tmp_path, records, monkeypatch):
    monkeypatch.setenv("FACTORY_RECORDS_INDEX_URL", f"sqlite:///{tmp_path / 'index.sqlite'}")
    store = LocalRecordStore(tmp_path / "data")
    index = open_index(store, tmp_path / "data")
    index.ensure_current(echo=lambda _: None)
    for record in records:
        store.write_record(record)
    return index


def comparable(plan) -> dict:
    value = plan.as_dict()
    value.pop("now")
    return value


def test_the_index_plans_what_the_whole_history_plans(tmp_path, monkeypatch):
    registry = FakeRegistry()
    records = scenario(registry)
    index = indexed(tmp_path, records, monkeypatch)
    from_list = plan_gc(records, registry, keep=2, evidence_days=90, now=NOW)
    from_index = plan_gc(IndexedRecords(index), registry, keep=2, evidence_days=90, now=NOW)
    assert comparable(from_index) == comparable(from_list)
    assert from_list.deletions and from_list.files and from_list.releases  # not a vacuous match


def test_evidence_gc_removed_is_not_planned_again(tmp_path, monkeypatch):
    registry = FakeRegistry()
    records = scenario(registry)
    index = indexed(tmp_path, records, monkeypatch)
    first = plan_gc(IndexedRecords(index), registry, keep=2, evidence_days=90, now=NOW)
    assert first.files
    index.mark_evidence_removed(f.build_id for f in first.files)
    again = plan_gc(IndexedRecords(index), registry, keep=2, evidence_days=90, now=NOW)
    assert again.files == []
    assert again.deletions == first.deletions


class CatalogRegistry(FakeRegistry):
    """A registry that lists its repositories: gc then asks only those for their tags."""

    def catalog(self) -> list[str]:
        return sorted(self.tags)


def test_with_a_catalog_only_existing_repositories_are_listed(tmp_path, monkeypatch):
    registry = CatalogRegistry()
    records = scenario(registry)
    index = indexed(tmp_path, records, monkeypatch)
    plain = FakeRegistry()
    plain.manifests, plain.tags = registry.manifests, registry.tags
    expected = plan_gc(records, plain, keep=2, evidence_days=90, now=NOW)
    plan = plan_gc(IndexedRecords(index), registry, keep=2, evidence_days=90, now=NOW)
    assert comparable(plan) == comparable(expected)
    assert "factory/old" in plain.listed and "factory/old" not in registry.listed
