"""Multi-arch publish on the real pipeline and registry: exact entries, no-op re-publish, the gate.

Two manifests are built through the platform chains on amd64 and arm64 (arm64 under qemu): one
passes everywhere, one carries the x86_64-only `legacy` fragment whose `agent` suite fails on
arm64. Manifest ids are unique per run, so every repository starts empty, and everything pushed
is deleted afterwards.
"""

import json
import uuid

import pytest

from factory.errors import FactoryError
from factory.plan.decisions import RecordIndex, plan, resolve_base_digests
from factory.records.store import LocalRecordStore
from factory.registry.client import RegistryClient
from factory.registry.names import split_reference
from factory.registry.publish import LATEST_TAG, publish, publish_plan
from factory.store.load import load_store
from tests.integration.engine.test_pipeline import materialize
from tests.integration.stores import example_store_copy, manifest

pytestmark = pytest.mark.integration

PLATFORMS = ("linux/amd64", "linux/arm64")


class CountingClient(RegistryClient):
    """The real client, counting the manifests it writes (a no-op publish writes none)."""

    def __init__(self, address: str):
        super().__init__(address)
        self.puts: list[str] = []

    def put_manifest(self, repository: str, reference: str, media_type: str, body: bytes) -> str:
        self.puts.append(f"{repository}:{reference}")
        return super().put_manifest(repository, reference, media_type, body)


@pytest.fixture(scope="module")
def built(services, tmp_path_factory):
    """Both manifests built on both platforms; their records, the store, and the decisions."""
    tmp_path = tmp_path_factory.mktemp("publish")
    run = uuid.uuid4().hex[:8]
    good, partial = f"pub-{run}", f"pub-legacy-{run}"
    legacy = {"security": "0.1.0", "core": "0.1.0", "legacy": "0.1.0"}
    store_path = example_store_copy(
        tmp_path,
        {
            good: manifest(platforms=PLATFORMS),
            partial: manifest(fragments=legacy, platforms=PLATFORMS, tests=["smoke", "agent"]),
        },
    )
    data = tmp_path / "data"
    for manifest_id in (good, partial):
        for platform in PLATFORMS:
            materialize(services, store_path, data, manifest_id, platform)
    store = load_store(store_path)
    index = RecordIndex.from_records(LocalRecordStore(data).records())
    items = plan(
        store,
        resolve_base_digests(store, store.combinations()),
        index,
        gpu_available=False,
    )
    decisions = {d.manifest_id: d for d in publish_plan(store, index, items)}
    client = RegistryClient(services.registry)
    yield {"good": good, "partial": partial, "index": index, "decisions": decisions}
    for manifest_id in (good, partial):
        for repository in (f"factory/{manifest_id}", f"factory/{manifest_id}-cache"):
            for tag in client.list_tags(repository):
                digest = client.head_digest(repository, tag)
                if digest:
                    client.delete_manifest(repository, digest)


def test_index_lists_exactly_the_recorded_per_platform_digests(services, built):
    decision = built["decisions"][built["good"]]
    assert decision.ready, decision.reasons
    records = {p: built["index"].latest[(built["good"], p)] for p in PLATFORMS}
    assert {r.status for r in records.values()} == {"pass"}

    client = CountingClient(services.registry)
    digest = publish(decision, client)

    _, repository, _ = split_reference(records["linux/amd64"].image.ref)
    assert repository == f"factory/{built['good']}"
    assert client.head_digest(repository, decision.release_tag) == digest
    assert client.head_digest(repository, LATEST_TAG) == digest
    assert client.platforms(repository, decision.release_tag) == {
        p: r.image.digest for p, r in records.items()
    }
    _, fetched, body = client.get_manifest(repository, digest)
    assert fetched == digest
    assert sorted(m["digest"] for m in json.loads(body)["manifests"]) == sorted(
        r.image.digest for r in records.values()
    )
    assert client.puts == [f"{repository}:{decision.release_tag}", f"{repository}:{LATEST_TAG}"]

    # Same decision again: same digest, nothing written.
    again = CountingClient(services.registry)
    assert publish(decision, again) == digest
    assert again.puts == []


def test_partial_manifest_is_shown_and_never_published(services, built):
    decision = built["decisions"][built["partial"]]
    states = {s.platform: s.state for s in decision.platforms}
    assert states == {"linux/amd64": "pass", "linux/arm64": "fail"}
    assert not decision.ready and decision.release_tag is None
    [reason] = decision.reasons
    assert reason.startswith("linux/arm64: fail: newest record is fail: stage test")

    client = CountingClient(services.registry)
    with pytest.raises(FactoryError, match="not ready to publish"):
        publish(decision, client)
    assert client.puts == []
    tags = client.list_tags(f"factory/{built['partial']}")
    assert tags and LATEST_TAG not in tags
    assert not [t for t in tags if t.startswith("release-")]
