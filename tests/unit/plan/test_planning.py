"""The plan: reasons and rebuild flags a user would expect, from store, digests and records."""

import pytest

from factory.plan.decisions import RecordIndex, plan
from factory.platforms import BY_NAME
from factory.store.keys import combination_inputs
from factory.store.load import load_store
from tests.unit.records.test_records import make_record
from tests.unit.store_factory import write_store

DIGESTS = {
    ("busybox", "linux/amd64"): "sha256:" + "1" * 64,
    ("busybox", "linux/arm64"): "sha256:" + "2" * 64,
    ("amd64only", "linux/amd64"): "sha256:" + "3" * 64,
}


def record_for(store, item, status="pass"):
    platform = BY_NAME[item.platform]
    base = store.manifest(item.manifest_id).base
    inputs = combination_inputs(
        store, item.manifest_id, platform, DIGESTS[(base, platform.oci_platform)]
    )
    return make_record(
        manifest_id=item.manifest_id,
        platform=item.platform,
        pool=item.pool,
        status=status,
        build_key=item.build_key,
        record_key=item.record_key,
        inputs=inputs.as_record(),
    )


def by_combo(items):
    return {(i.manifest_id, i.platform): i for i in items}


@pytest.fixture
def recorded(tmp_path):
    """A store whose every combination (GPU aside) passed for its current keys."""
    store = load_store(write_store(tmp_path))
    first = plan(store, DIGESTS, RecordIndex(), gpu_available=False)
    records = [record_for(store, i) for i in first if i.action == "run"]
    return tmp_path, records


def test_new_store_runs_everything_but_gpu_without_executor(tmp_path):
    store = load_store(write_store(tmp_path))
    items = by_combo(plan(store, DIGESTS, RecordIndex(), gpu_available=False))
    assert items[("llm_factory", "linux/amd64")].reasons == ["new"]
    assert items[("llm_factory", "linux/amd64")].rebuild
    gpu = items[("llm_factory", "linux/amd64+gpu")]
    assert (gpu.action, gpu.reasons, gpu.rebuild) == ("skip", ["no_executor"], False)
    with_gpu = by_combo(plan(store, DIGESTS, RecordIndex(), gpu_available=True))
    assert with_gpu[("llm_factory", "linux/amd64+gpu")].action == "run"


def test_everything_recorded_is_up_to_date(recorded):
    tmp_path, records = recorded
    store = load_store(write_store(tmp_path))
    items = plan(store, DIGESTS, RecordIndex.from_records(records), gpu_available=False)
    assert {tuple(i.reasons) for i in items} == {("up_to_date",), ("no_executor",)}
    assert not any(i.rebuild for i in items)


def plan_after_change(recorded, rel: str, text: str) -> dict:
    """The plan by combination once the store file `rel` says `text`, against the records."""
    tmp_path, records = recorded
    path = write_store(tmp_path)
    (path.parent / rel).write_text(text)
    return by_combo(
        plan(load_store(path), DIGESTS, RecordIndex.from_records(records), gpu_available=False)
    )


def test_fragment_change_hits_exactly_the_manifests_using_it(recorded):
    items = plan_after_change(
        recorded, "modules/light/0.1.0.Dockerfile", "ENV FACTORY_PROFILE=light2\n"
    )
    for platform in ("linux/amd64", "linux/arm64"):
        item = items[("llm_factory", platform)]
        assert (item.action, item.rebuild, item.reasons) == ("run", True, ["fragment_changed"])
    assert items[("web", "linux/amd64")].reasons == ["up_to_date"]


def test_test_suite_change_retests_without_rebuild(recorded):
    items = plan_after_change(recorded, "tests/http.sh", "#!/bin/sh\necho changed\n")
    web = items[("web", "linux/amd64")]
    assert (web.action, web.rebuild, web.reasons) == ("run", False, ["tests_changed"])
    assert items[("llm_factory", "linux/amd64")].action == "skip"


def test_base_digest_change_on_one_platform_only(recorded):
    tmp_path, records = recorded
    moved = DIGESTS | {("busybox", "linux/arm64"): "sha256:" + "9" * 64}
    items = plan(
        load_store(write_store(tmp_path)),
        moved,
        RecordIndex.from_records(records),
        gpu_available=False,
    )
    runs = [(i.manifest_id, i.platform, i.reasons, i.rebuild) for i in items if i.action == "run"]
    assert runs == [("llm_factory", "linux/arm64", ["base_changed"], True)]


def test_manifest_change_and_last_failed_and_force(recorded):
    tmp_path, records = recorded
    store = load_store(write_store(tmp_path))
    failed = [
        record_for(store, i, status="fail") if i.manifest_id == "web" else None
        for i in plan(store, DIGESTS, RecordIndex(), gpu_available=False)
        if i.action == "run"
    ]
    index = RecordIndex.from_records(
        [
            *records,
            *[
                f.model_copy(update={"finished_at": "2026-11-27T00:00:00.000000Z"})
                for f in failed
                if f
            ],
        ]
    )
    items = by_combo(plan(store, DIGESTS, index, gpu_available=False))
    web = items[("web", "linux/amd64")]
    assert (web.action, web.reasons, web.rebuild) == ("run", ["last_failed"], False)

    forced = by_combo(plan(store, DIGESTS, index, gpu_available=False, force=True))
    assert forced[("llm_factory", "linux/amd64")].reasons == ["forced"]
    assert forced[("llm_factory", "linux/amd64")].rebuild

    bumped = write_store(
        tmp_path / "bumped", lambda d: d["manifests"]["web"]["fragments"].update(core="0.1.0")
    )
    items = by_combo(plan(load_store(bumped), DIGESTS, index, gpu_available=False))
    assert set(items[("web", "linux/amd64")].reasons) == {"fragment_changed", "manifest_changed"}


def test_filters(tmp_path):
    store = load_store(write_store(tmp_path))
    items = plan(
        store,
        DIGESTS,
        RecordIndex(),
        gpu_available=False,
        manifest_ids=["llm_factory"],
        platforms=["linux/arm64"],
    )
    assert [(i.manifest_id, i.platform) for i in items] == [("llm_factory", "linux/arm64")]
