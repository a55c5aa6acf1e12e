"""Both sensors, ticked with build_sensor_context against a real instance and the real registry."""

import json
import uuid

import dagster as dg
import pytest
from click.testing import CliRunner

from factory.cli.main import main
from factory.plan.decisions import RecordIndex, plan, resolve_base_digests
from factory.records.model import utc_now
from factory.records.store import LocalRecordStore
from factory.services.embedded import docker_host
from factory.settings import Settings
from factory.store.load import load_store
from resources import DockerBuilder, ManifestStore, RecordStore
from sensors import base_digest_sensor, manifest_change_sensor
from tests.integration.stores import example_store_copy, manifest
from tests.unit.records.test_records import make_record

pytestmark = pytest.mark.integration


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def resources(store_path, data_dir):
    return {
        "manifest_store": ManifestStore(path=str(store_path)),
        "record_store": RecordStore(data_dir=str(data_dir)),
        "docker_builder": DockerBuilder(),
    }


def tick(sensor, instance, store_path, data_dir, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources(store_path, data_dir)
    )
    result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return result, [], cursor
    # Calling a sensor directly does not apply its partition requests: do what the daemon does.
    apply_partition_requests(instance, result)
    if result.skip_reason is not None:
        return result.skip_reason, [], result.cursor
    return result, result.run_requests or [], result.cursor


def apply_partition_requests(instance, result):
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def plan_json(store_path, data_dir):
    env = {"FACTORY_DATA_DIR": str(data_dir), "DOCKER_HOST": docker_host(Settings.from_env())}
    result = CliRunner().invoke(
        main, ["plan", "--json", "--manifest-store", str(store_path)], env=env
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def combos(requests):
    return sorted((r.partition_key, r.tags["factory/platform"]) for r in requests)


def record_everything_passed(store_path, data_dir):
    """What finished runs would leave: a pass record for each runnable combination's keys."""
    store = load_store(store_path)
    digests = resolve_base_digests(store, store.combinations())
    records = LocalRecordStore(data_dir)
    for item in plan(store, digests, RecordIndex(), gpu_available=False):
        if item.action == "run":
            records.write_record(
                make_record(
                    manifest_id=item.manifest_id,
                    platform=item.platform,
                    pool=item.pool,
                    build_key=item.build_key,
                    record_key=item.record_key,
                    inputs={},
                    finished_at=utc_now(),
                )
            )


def partitions(instance):
    return {
        name: sorted(instance.get_dynamic_partitions(name))
        for name in ("manifests_linux_amd64", "manifests_linux_arm64", "manifests_linux_amd64_gpu")
    }


def test_manifest_sensor_requests_exactly_what_changed(services, instance, tmp_path):
    store_path = example_store_copy(tmp_path)
    data = tmp_path / "data"

    result, requests, cursor = tick(manifest_change_sensor, instance, store_path, data)
    assert len(requests) == 7  # 8 combinations, the GPU one has no executor here
    assert partitions(instance)["manifests_linux_amd64_gpu"] == ["llm_factory"]
    request = next(r for r in requests if r.partition_key == "edge_proxy")
    assert request.tags["dagster/priority"] == "10"  # edge_proxy is high priority
    assert request.job_name in ("build_linux_amd64", "build_linux_arm64")
    assert len(cursor) < 200
    assert {e.partition for e in result.asset_events} == {r.partition_key for r in requests}

    record_everything_passed(store_path, data)
    skip, requests, cursor = tick(manifest_change_sensor, instance, store_path, data, cursor)
    assert requests == [] and "unchanged" in skip.skip_message

    # A new version of the `light` fragment for llm_factory only.
    (store_path.parent / "modules/light/0.2.0.Dockerfile").write_text("ENV LIGHT=2\n")
    doc = json.loads(store_path.read_text())
    doc["modules"]["light"]["0.2.0"] = {"path": "modules/light/0.2.0.Dockerfile"}
    doc["manifests"]["llm_factory"]["fragments"]["light"] = "0.2.0"
    store_path.write_text(json.dumps(doc))
    result, requests, cursor = tick(manifest_change_sensor, instance, store_path, data, cursor)
    assert combos(requests) == [("llm_factory", "linux/amd64"), ("llm_factory", "linux/arm64")]
    assert all("fragment_changed" in r.tags["factory/reasons"] for r in requests)
    # `factory plan --json` says the same, with the same keys and reasons.
    planned = [i for i in plan_json(store_path, data) if i["action"] == "run"]
    assert sorted((i["manifest_id"], i["platform"]) for i in planned) == combos(requests)
    by_combo = {(r.partition_key, r.tags["factory/platform"]): r for r in requests}
    for item in planned:
        request = by_combo[(item["manifest_id"], item["platform"])]
        assert request.run_key == item["record_key"] and item["rebuild"] is True
        assert request.tags["factory/reasons"] == ",".join(item["reasons"])

    # Those runs finish; then the content of a fragment at its version changes.
    record_everything_passed(store_path, data)
    (store_path.parent / "modules/httpd/0.1.0.Dockerfile").write_text("EXPOSE 8081\n")
    result, requests, cursor = tick(manifest_change_sensor, instance, store_path, data, cursor)
    assert combos(requests) == [("edge_proxy", "linux/amd64"), ("edge_proxy", "linux/arm64")]


def test_invalid_store_skips_and_keeps_partitions(services, instance, tmp_path):
    store_path = example_store_copy(tmp_path)
    data = tmp_path / "data"
    _, _, cursor = tick(manifest_change_sensor, instance, store_path, data)
    before = partitions(instance)
    good = store_path.read_text()
    store_path.write_text(good.replace('"legacy_agent": {', '"Legacy Agent!": {'))
    skip, requests, new_cursor = tick(manifest_change_sensor, instance, store_path, data, cursor)
    assert isinstance(skip, dg.SkipReason) and requests == [] and new_cursor == cursor
    assert "Legacy Agent!" in skip.skip_message and str(store_path) in skip.skip_message
    assert partitions(instance) == before


def test_removed_manifest_loses_its_partitions_but_keeps_its_records(services, instance, tmp_path):
    store_path = example_store_copy(tmp_path)
    data = tmp_path / "data"
    _, _, cursor = tick(manifest_change_sensor, instance, store_path, data)
    record_everything_passed(store_path, data)
    doc = json.loads(store_path.read_text())
    del doc["manifests"]["batch_worker"]
    store_path.write_text(json.dumps(doc))
    _, requests, _ = tick(manifest_change_sensor, instance, store_path, data, cursor)
    assert requests == []
    assert "batch_worker" not in partitions(instance)["manifests_linux_amd64"]
    assert any(r.manifest_id == "batch_worker" for r in LocalRecordStore(data).records())


def test_run_requests_are_capped_per_tick_and_resume(services, instance, tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORY_MAX_RUN_REQUESTS_PER_TICK", "3")
    store_path = example_store_copy(tmp_path)
    data = tmp_path / "data"
    seen, cursor = [], None
    for _ in range(3):
        _, requests, cursor = tick(manifest_change_sensor, instance, store_path, data, cursor)
        assert len(requests) <= 3
        seen += combos(requests)
    assert len(seen) == len(set(seen)) == 7
    skip, requests, _ = tick(manifest_change_sensor, instance, store_path, data, cursor)
    assert requests == [] and isinstance(skip, dg.SkipReason)


def copy_image(client, source_repo, digest, target_repo, *, relabel: str | None = None) -> str:
    """Copy one platform's image between repositories; `relabel` makes a new, different image."""
    media_type, _, body = client.get_manifest(source_repo, digest)
    doc = json.loads(body)
    config = client.get_blob(source_repo, doc["config"]["digest"])
    if relabel:
        parsed = json.loads(config)
        parsed.setdefault("config", {}).setdefault("Labels", {})["refresh"] = relabel
        config = json.dumps(parsed).encode()
    doc["config"]["digest"] = client.push_blob(target_repo, config)
    doc["config"]["size"] = len(config)
    for layer in doc["layers"]:
        client.push_blob(target_repo, client.get_blob(source_repo, layer["digest"]))
    body = json.dumps(doc).encode()
    return client.put_manifest(target_repo, client_digest(body), media_type, body)


def client_digest(body: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(body).hexdigest()


@pytest.fixture
def test_base(services):
    """A base of our own (a copy of the busybox base) whose arm64 image the test can refresh."""
    from factory.registry.client import RegistryClient

    client = RegistryClient(services.registry)
    repo = f"factory/test/base-{uuid.uuid4().hex[:8]}"
    platforms = client.platforms("factory/base/busybox", "1.35")
    copies = {p: copy_image(client, "factory/base/busybox", d, repo) for p, d in platforms.items()}
    client.put_index(repo, "1.35", [(d, p) for p, d in copies.items()])

    def refresh_arm64() -> str:
        fresh = copy_image(client, repo, copies["linux/arm64"], repo, relabel=uuid.uuid4().hex)
        client.put_index(
            repo, "1.35", [(copies["linux/amd64"], "linux/amd64"), (fresh, "linux/arm64")]
        )
        return fresh

    return f"{services.registry}/{repo}", refresh_arm64


def test_base_digest_sensor_rebuilds_exactly_the_moved_platform(
    services, instance, tmp_path, test_base
):
    from factory.records.model import utc_now as now
    from tests.integration.engine.test_pipeline import materialize

    image, refresh_arm64 = test_base
    store_path = example_store_copy(
        tmp_path,
        {
            "on_test": manifest(platforms=["linux/amd64", "linux/arm64"]) | {"base": "tbase"},
            "on_test_arm": manifest(platforms=["linux/arm64"]) | {"base": "tbase"},
            "on_busybox": manifest(platforms=["linux/arm64"]),
        },
    )
    doc = json.loads(store_path.read_text())
    doc["bases"]["tbase"] = {
        "image": image,
        "tag": "1.35",
        "platforms": ["linux/amd64", "linux/arm64"],
    }
    store_path.write_text(json.dumps(doc))
    data = tmp_path / "data"
    for manifest_id, platform in (
        ("on_test", "linux/amd64"),
        ("on_test", "linux/arm64"),
        ("on_test_arm", "linux/arm64"),
        ("on_busybox", "linux/arm64"),
    ):
        result, _ = materialize(services, store_path, data, manifest_id, platform)
        assert result.success, (manifest_id, platform)
    before = {r.build_id: r for r in LocalRecordStore(data).records()}
    assert len(before) == 4

    skip, requests, cursor = tick(base_digest_sensor, instance, store_path, data)
    assert requests == [] and "recorded" in skip.skip_message
    skip, requests, cursor = tick(base_digest_sensor, instance, store_path, data, cursor)
    assert requests == [] and "no base digest moved" in skip.skip_message

    started = now()
    new_arm64 = refresh_arm64()
    _, requests, cursor = tick(base_digest_sensor, instance, store_path, data, cursor)
    assert combos(requests) == [("on_test", "linux/arm64"), ("on_test_arm", "linux/arm64")]
    assert all(r.tags["factory/reasons"] == "base_changed" for r in requests)
    assert all(r.job_name == "build_linux_arm64" for r in requests)
    _, again, cursor = tick(base_digest_sensor, instance, store_path, data, cursor)
    assert again == []  # nothing requested twice

    for request in requests:
        result, _ = materialize(services, store_path, data, request.partition_key, "linux/arm64")
        assert result.success
    after = list(LocalRecordStore(data).records())
    fresh = [r for r in after if r.build_id not in before]
    assert sorted((r.manifest_id, r.platform) for r in fresh) == [
        ("on_test", "linux/arm64"),
        ("on_test_arm", "linux/arm64"),
    ]
    assert all(r.inputs["base"]["digest"] == new_arm64 and r.finished_at > started for r in fresh)
    for build_id, record in before.items():  # earlier records, amd64 among them, stay as they were
        assert LocalRecordStore(data).get("record", build_id) is not None
        assert record in after


def test_base_digest_sensor_skips_when_the_registry_does_not_answer(services, instance, tmp_path):
    store_path = example_store_copy(tmp_path)
    _, _, cursor = tick(base_digest_sensor, instance, store_path, tmp_path / "data")
    doc = json.loads(store_path.read_text())
    doc["bases"]["busybox"]["image"] = "127.0.0.1:1/factory/base/busybox"
    store_path.write_text(json.dumps(doc))
    skip, requests, new_cursor = tick(
        base_digest_sensor, instance, store_path, tmp_path / "data", cursor
    )
    assert requests == [] and new_cursor == cursor
    assert "127.0.0.1:1" in skip.skip_message and "retrying next tick" in skip.skip_message
