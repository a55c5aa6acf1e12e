"""The code location loads, with the asset chains, partitions, pools and tags DESIGN.md fixes."""

import json

import dagster as dg

from factory.platforms import PLATFORMS
from factory_assets.definitions import defs

CHAIN = ("dockerfile", "image", "test_report", "sbom", "compatibility_record")


def test_every_platform_has_its_chain_partitioned_and_pooled():
    graph = defs.resolve_asset_graph()
    for platform in PLATFORMS:
        for name in CHAIN:
            key = dg.AssetKey([platform.slug, name])
            node = graph.get(key)
            assert node.partitions_def == dg.DynamicPartitionsDefinition(
                name=f"manifests_{platform.slug}"
            ), key
            assert node.pools == {platform.pool}, key
            spec = defs.resolve_assets_def(key).get_op_def_for_asset_key(key)
            config = json.loads(spec.tags["dagster-k8s/config"])
            assert config["pod_spec_config"]["node_selector"]["kubernetes.io/arch"] in (
                "amd64",
                "arm64",
            )
        parents = graph.get(dg.AssetKey([platform.slug, "image"])).parent_keys
        assert parents == {dg.AssetKey([platform.slug, "dockerfile"])}


def test_each_combination_is_one_step_that_cannot_be_subset():
    """A platform's five assets are one op: one process, one pod, one Celery task per partition,
    with no output handed over through an IO manager."""
    for platform in PLATFORMS:
        keys = {dg.AssetKey([platform.slug, name]) for name in CHAIN}
        assets_defs = {id(defs.resolve_assets_def(key)) for key in keys}
        assert len(assets_defs) == 1, platform.name
        chain = defs.resolve_assets_def(dg.AssetKey([platform.slug, "image"]))
        assert set(chain.keys) == keys
        assert not chain.can_subset
        assert chain.op.name == f"{platform.slug}__chain"
        assert chain.op.pool == platform.pool
        # Nothing goes through an IO manager: every input and output is of type Nothing.
        assert all(i.dagster_type.is_nothing for i in chain.op.input_defs)
        assert all(out.dagster_type.is_nothing for out in chain.op.output_defs)
        job = defs.resolve_job_def(f"build_{platform.slug}")
        assert [node.name for node in job.nodes] == [chain.op.name]


def test_gpu_steps_ask_for_a_gpu_and_tolerate_its_taint():
    key = dg.AssetKey(["linux_amd64_gpu", "image"])
    tags = defs.resolve_assets_def(key).get_op_def_for_asset_key(key).tags
    config = json.loads(tags["dagster-k8s/config"])
    assert config["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert config["pod_spec_config"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_matrix_depends_on_every_platforms_records():
    graph = defs.resolve_asset_graph()
    parents = graph.get(dg.AssetKey("compatibility_matrix")).parent_keys
    assert parents == {dg.AssetKey([p.slug, "compatibility_record"]) for p in PLATFORMS}


def test_one_build_job_per_platform():
    for platform in PLATFORMS:
        job = defs.resolve_job_def(f"build_{platform.slug}")
        assert job.partitions_def.name == f"manifests_{platform.slug}"
    assert defs.resolve_job_def("compatibility_matrix_job")


def test_sensors_schedules_and_matrix_side_assets_are_defined():
    assert {s.name for s in defs.sensors} >= {"manifest_change_sensor", "base_digest_sensor"}
    schedules = {s.name for s in defs.schedules}
    assert {"nightly_reverify_linux_amd64", "retention_schedule"} <= schedules
    graph = defs.resolve_asset_graph()
    assert graph.has(dg.AssetKey("multiarch_index"))
    assert graph.get(dg.AssetKey(["linux_amd64", "inputs"])).is_observable
    assert defs.resolve_job_def("retention_job")


def test_matrix_assets_follow_records_and_alert_sensors_run_by_default():
    graph = defs.resolve_asset_graph()
    for name in ("compatibility_matrix", "multiarch_index"):
        condition = graph.get(dg.AssetKey(name)).automation_condition
        assert condition is not None and condition.get_label() == "new compatibility records"
    # The builds themselves are never launched by automation.
    assert (
        graph.get(dg.AssetKey(["linux_amd64", "compatibility_record"])).automation_condition is None
    )
    sensors = {s.name: s for s in defs.sensors}
    for name in ("results_automation_sensor", "executor_lost_sensor", "queue_backlog_sensor"):
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING, name
    targeted = sensors["results_automation_sensor"].asset_selection.resolve(graph)
    assert targeted == {dg.AssetKey("compatibility_matrix"), dg.AssetKey("multiarch_index")}
