"""The publish gate's truth table: ready only when every required platform passed for its keys."""

import hashlib

import pytest

from factory.errors import FactoryError
from factory.plan.decisions import RecordIndex, plan
from factory.records.model import ErrorInfo, ImageInfo
from factory.registry.client import RegistryClient
from factory.registry.publish import PARTIAL, READY, publish, publish_plan
from factory.store.load import load_store
from tests.unit.plan.test_planning import DIGESTS, record_for
from tests.unit.store_factory import write_store

REGISTRY = "127.0.0.1:5000"


def passing(store, item, **overrides):
    """A passing record for the item's current keys, with an image of its own."""
    slug = item.platform.replace("/", "_").replace("+", "_")
    digest = "sha256:" + hashlib.sha256(item.platform.encode()).hexdigest()
    image = ImageInfo(
        ref=f"{REGISTRY}/factory/{item.manifest_id}:{slug}-{item.build_key[:12]}",
        digest=digest,
        size_bytes=1,
        layers=2,
    )
    return record_for(store, item).model_copy(update={"image": image, **overrides})


def decide(tmp_path, *, gpu_available=False, change=None, mutate=None):
    """Plan the test store, record a pass for every run item, apply `change`, decide.

    `change(store, items, records)` may replace records (by combination) before the decision.
    """
    store = load_store(write_store(tmp_path, mutate))
    items = plan(store, DIGESTS, RecordIndex(), gpu_available=gpu_available)
    records = {(i.manifest_id, i.platform): passing(store, i) for i in items if i.action == "run"}
    if change is not None:
        change(store, {(i.manifest_id, i.platform): i for i in items}, records)
    decisions = publish_plan(store, RecordIndex.from_records(records.values()), items)
    return {d.manifest_id: d for d in decisions}


def states(decision):
    return {s.platform: (s.state, s.required) for s in decision.platforms}


def test_all_pass_is_ready_and_gpu_without_executor_is_ignored(tmp_path):
    decisions = decide(tmp_path)
    llm = decisions["llm_factory"]
    assert (llm.status, llm.ready, llm.reasons) == (READY, True, ())
    assert states(llm) == {
        "linux/amd64": ("pass", True),
        "linux/arm64": ("pass", True),
        "linux/amd64+gpu": ("not run", False),
    }
    assert [(s.platform, oci) for s, oci in llm.index_entries()] == [
        ("linux/amd64", "linux/amd64"),
        ("linux/arm64", "linux/arm64"),
    ]
    assert llm.release_tag.startswith("release-") and len(llm.release_tag) == len("release-") + 12
    assert decisions["web"].ready
    assert llm.as_dict()["release_tag"] == llm.release_tag


def _replace(platform, **update):
    def change(store, items, records):
        key = ("llm_factory", platform)
        records[key] = records[key].model_copy(update=update)

    return change


def _drop(platform):
    def change(store, items, records):
        del records[("llm_factory", platform)]

    return change


@pytest.mark.parametrize(
    ("change", "state", "reason"),
    [
        (
            _replace("linux/arm64", status="fail", error=ErrorInfo(stage="test", message="x")),
            "fail",
            "newest record is fail: stage test",
        ),
        (
            _replace("linux/arm64", status="error", image=None),
            "error",
            "newest record is error",
        ),
        (_drop("linux/arm64"), "pending", "never recorded"),
        (_replace("linux/arm64", record_key="0" * 64), "stale", "is for older inputs"),
        (
            _replace("linux/arm64", image=ImageInfo(ref=f"{REGISTRY}/factory/x:y")),
            "pass",
            "names no image digest",
        ),
    ],
    ids=["fail", "error", "pending", "stale", "no-digest"],
)
def test_one_platform_not_passing_makes_the_manifest_partial(tmp_path, change, state, reason):
    llm = decide(tmp_path, change=change)["llm_factory"]
    assert llm.status == PARTIAL and not llm.ready and llm.release_tag is None
    arm = next(s for s in llm.platforms if s.platform == "linux/arm64")
    assert (arm.state, arm.required) == (state, True) and reason in arm.reason
    [why] = llm.reasons
    assert why.startswith(f"linux/arm64: {state}: ") and reason in why
    assert states(llm)["linux/amd64"] == ("pass", True)


def test_a_stale_record_blocks_even_when_it_passed(tmp_path):
    llm = decide(tmp_path, change=_replace("linux/amd64", record_key="0" * 64))["llm_factory"]
    assert states(llm)["linux/amd64"] == ("stale", True)
    assert llm.reasons == ("linux/amd64: stale: newest record (pass) is for older inputs",)


def test_gpu_with_an_executor_is_required(tmp_path):
    llm = decide(tmp_path, gpu_available=True, change=_drop("linux/amd64+gpu"))["llm_factory"]
    assert llm.status == PARTIAL
    assert states(llm)["linux/amd64+gpu"] == ("pending", True)
    assert llm.reasons == ("linux/amd64+gpu: pending: never recorded",)

    failed = _replace("linux/amd64+gpu", status="fail")
    llm = decide(tmp_path, gpu_available=True, change=failed)["llm_factory"]
    assert llm.reasons == ("linux/amd64+gpu: fail: newest record is fail",)


def test_gpu_passing_gates_but_shares_the_amd64_index_entry(tmp_path):
    llm = decide(tmp_path, gpu_available=True)["llm_factory"]
    assert llm.ready and states(llm)["linux/amd64+gpu"] == ("pass", True)
    # One entry per OCI platform: the plain amd64 image, never a duplicate linux/amd64.
    assert [(s.platform, oci) for s, oci in llm.index_entries()] == [
        ("linux/amd64", "linux/amd64"),
        ("linux/arm64", "linux/arm64"),
    ]
    # The release names what was gated, so it differs from the release without the GPU gate.
    assert llm.release_tag != decide(tmp_path / "nogpu")["llm_factory"].release_tag


def test_gpu_alone_is_the_linux_amd64_entry(tmp_path):
    def gpu_and_arm(d):
        d["manifests"]["llm_factory"]["platforms"] = ["linux/arm64", "linux/amd64+gpu"]

    llm = decide(tmp_path, gpu_available=True, mutate=gpu_and_arm)["llm_factory"]
    assert [(s.platform, oci) for s, oci in llm.index_entries()] == [
        ("linux/arm64", "linux/arm64"),
        ("linux/amd64+gpu", "linux/amd64"),
    ]
    # Without a GPU executor it publishes what it can run, arm64 alone.
    llm = decide(tmp_path / "nogpu", mutate=gpu_and_arm)["llm_factory"]
    assert llm.ready and [s.platform for s, _ in llm.index_entries()] == ["linux/arm64"]


def test_a_manifest_with_nothing_runnable_is_partial(tmp_path):
    def gpu_only(d):
        d["manifests"]["llm_factory"]["platforms"] = ["linux/amd64+gpu"]

    llm = decide(tmp_path, mutate=gpu_only)["llm_factory"]
    assert llm.status == PARTIAL
    assert llm.reasons == ("no platform it lists can be run here",)


def test_release_tag_follows_keys_and_digests(tmp_path):
    first = decide(tmp_path)["llm_factory"]
    assert decide(tmp_path / "again")["llm_factory"].release_tag == first.release_tag
    rebuilt = _replace(
        "linux/arm64",
        image=ImageInfo(ref=f"{REGISTRY}/factory/llm_factory:x", digest="sha256:" + "e" * 64),
    )
    assert decide(tmp_path / "rebuilt", change=rebuilt)["llm_factory"].release_tag != (
        first.release_tag
    )


def test_a_missing_plan_item_is_not_guessed(tmp_path):
    store = load_store(write_store(tmp_path))
    items = plan(store, DIGESTS, RecordIndex(), gpu_available=False)
    records = [passing(store, i) for i in items if i.action == "run"]
    only_amd64 = [i for i in items if i.platform != "linux/arm64"]
    [llm] = [
        d
        for d in publish_plan(store, RecordIndex.from_records(records), only_amd64)
        if d.manifest_id == "llm_factory"
    ]
    assert llm.status == PARTIAL
    assert states(llm)["linux/arm64"] == ("pending", True)
    assert "not in the plan" in llm.reasons[0]


def test_publish_refuses_a_partial_decision_before_touching_the_registry(tmp_path):
    llm = decide(tmp_path, change=_replace("linux/arm64", status="fail"))["llm_factory"]
    # Nothing listens on port 9: any request would fail with a ServiceError, not this message.
    with pytest.raises(
        FactoryError, match="llm_factory is not ready to publish: linux/arm64: fail"
    ):
        publish(llm, RegistryClient("127.0.0.1:9"))
