"""What Kubernetes would be given, rendered without a cluster.

- The step Job of one asset of each pool, built by dagster-k8s from the asset's op tags (alone, and
  merged under the executor's `step_k8s_config` as `K8sStepHandler` does).
- Both one-pod-per-combination shapes, rendered the way dagster-k8s renders them: the build run
  pod (K8sRunLauncher: the launcher's `run_k8s_config` from deploy/dagster.yaml, then the run's
  `dagster-k8s/config` tag) and the chain step pod (`K8sStepHandler`: the launcher's config, the
  executor's `step_k8s_config`, then the step's op tags), each with its platform's placement, and
  exactly one build pod per combination.
- `deploy/dagster.yaml` against Dagster's instance schema and each configured class's schema.
- `deploy/helm/values.yaml`: the chart's values.schema.json is not available offline, so the keys
  the chart reads for Factory are asserted explicitly, and kept in step with deploy/dagster.yaml.
- The manifests in `deploy/k8s/`, field by field against the Kubernetes API models.
"""

import re
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes.client as k8s
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.execution.api import create_execution_plan
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes.config_class import class_from_code_pointer
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_k8s_job_name,
    get_user_defined_k8s_config,
)

from factory.errors import FactoryError
from factory.platforms import PLATFORMS, Platform
from factory.pools import parse_pool_limits
from factory.settings import PROJECT_ROOT
from factory_assets.definitions import defs
from factory_assets.executor import (
    DATA_DIR_ON_NODE,
    DOCKER_HOST_IN_POD,
    DOCKER_SOCKET_DIR,
    STEP_K8S_CONFIG,
    executor_for_environment,
)
from factory_assets.jobs import K8S_CONFIG_TAG, build_job_name, build_job_tags
from factory_assets.platform_chain import chain_step_name

DEPLOY = PROJECT_ROOT / "deploy"
IMAGE = "registry.example.com/factory/code-location:0.1.0"
DAGSTER_HOME = "/opt/dagster/dagster_home"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
BUILD_REQUESTS = {"cpu": "1", "memory": "2Gi"}

# pool -> (one asset of that pool, its arch, its GPU limit as the Job carries it, a quantity
# string): DESIGN.md's placement table.
ONE_ASSET_PER_POOL = {
    "amd64": (dg.AssetKey(["linux_amd64", "image"]), "amd64", None),
    "arm64": (dg.AssetKey(["linux_arm64", "image"]), "arm64", None),
    "gpu": (dg.AssetKey(["linux_amd64_gpu", "image"]), "amd64", "1"),
}


def _op_tags(key: dg.AssetKey) -> dict[str, str]:
    return dict(defs.resolve_assets_def(key).get_op_def_for_asset_key(key).tags)


def _step_job(key: dg.AssetKey, step_k8s_config: dict | None = None) -> dict[str, Any]:
    """The Job dagster-k8s would create for this asset's step, as a dict."""
    config = get_user_defined_k8s_config(_op_tags(key))
    if step_k8s_config is not None:
        # K8sStepHandler._get_container_context: executor config first, op tags merged over it.
        executor_context = K8sContainerContext(
            run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(step_k8s_config)
        )
        config = executor_context.merge(K8sContainerContext(run_k8s_config=config)).run_k8s_config
    step_key = "__".join(key.path)
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image=IMAGE, dagster_home=DAGSTER_HOME),
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{get_k8s_job_name('0123abcd-run', step_key)}",
        user_defined_k8s_config=config,
        component="step_worker",
    )
    return job.to_dict()


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def _tolerations(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in t.items() if v is not None} for t in pod["tolerations"] or []]


@pytest.mark.parametrize("pool", sorted(ONE_ASSET_PER_POOL))
def test_step_job_lands_on_its_pools_nodes(pool):
    key, arch, gpus = ONE_ASSET_PER_POOL[pool]
    assert defs.resolve_asset_graph().get(key).pools == {pool}
    job = _step_job(key)
    pod = _pod(job)
    (container,) = pod["containers"]

    assert job["kind"] == "Job"
    assert container["image"] == IMAGE
    assert pod["node_selector"] == {"kubernetes.io/arch": arch}
    assert container["resources"]["requests"] == BUILD_REQUESTS
    limits = container["resources"]["limits"]
    assert limits["memory"] == "4Gi"
    if gpus is None:
        assert "nvidia.com/gpu" not in limits
        assert _tolerations(pod) == []
    else:
        assert limits["nvidia.com/gpu"] == gpus
        assert _tolerations(pod) == [GPU_TOLERATION]


@pytest.mark.parametrize("pool", sorted(ONE_ASSET_PER_POOL))
def test_executor_step_config_adds_the_engine_and_keeps_the_placement(pool):
    key, arch, gpus = ONE_ASSET_PER_POOL[pool]
    pod = _pod(_step_job(key, STEP_K8S_CONFIG))
    (container,) = pod["containers"]

    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DOCKER_HOST"] == DOCKER_HOST_IN_POD
    assert env["FACTORY_DATA_DIR"] == DATA_DIR_ON_NODE
    mounts = {m["name"]: m["mount_path"] for m in container["volume_mounts"]}
    assert mounts["factory-docker"] == DOCKER_SOCKET_DIR
    assert mounts["factory-data"] == DATA_DIR_ON_NODE
    host_paths = {v["name"]: v["host_path"]["path"] for v in pod["volumes"] if v["host_path"]}
    assert host_paths == {"factory-docker": DOCKER_SOCKET_DIR, "factory-data": DATA_DIR_ON_NODE}
    # The op tags win over the executor's small default requests.
    assert pod["node_selector"] == {"kubernetes.io/arch": arch}
    assert container["resources"]["requests"] == BUILD_REQUESTS
    assert container["resources"]["limits"].get("nvidia.com/gpu") == gpus


def test_untagged_steps_get_the_executor_defaults():
    key = dg.AssetKey("compatibility_matrix")
    pod = _pod(_step_job(key, STEP_K8S_CONFIG))
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert not pod["node_selector"]


# --- one pod per combination: the run-pod and step-pod shapes ----------------------------------

RUN_ID = "0123abcd-0000-4000-8000-000000000000"
# FACTORY_EXECUTOR of each shape: the build runs in its run pod, or in one step pod.
RUN_POD, STEP_POD = "in_process", "k8s"
LAUNCHER_REQUESTS = {"cpu": "250m", "memory": "512Mi"}


def _launcher_context() -> K8sContainerContext:
    """What K8sRunLauncher adds to every pod it renders (deploy/dagster.yaml's launcher config)."""
    config = _instance_yaml()["run_launcher"]["config"]
    return K8sContainerContext(
        env_config_maps=config["env_config_maps"],
        env_secrets=config["env_secrets"],
        namespace=config["job_namespace"],
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config["run_k8s_config"]),
    )


def _build_run(platform: Platform, executor: str) -> DagsterRun:
    """A run of `platform`'s build job for one partition, tagged as the code location running
    with FACTORY_EXECUTOR=`executor` tags it."""
    job = defs.resolve_job_def(build_job_name(platform.slug))
    tags = {
        **build_job_tags(platform, executor),
        **job.get_tags_for_partition_key("llm_factory", selected_asset_keys=None),
    }
    return DagsterRun(job_name=job.name, run_id=RUN_ID, tags=tags)


def _render(context: K8sContainerContext, args: list[str], component: str) -> dict[str, Any]:
    # The container context carries the launcher's config maps and secrets in run_k8s_config.
    return construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image=IMAGE, dagster_home=DAGSTER_HOME),
        args=args,
        job_name=f"dagster-{component}-{RUN_ID[:8]}",
        user_defined_k8s_config=context.run_k8s_config,
        component=component,
    ).to_dict()


def _run_pod_job(run: DagsterRun) -> dict[str, Any]:
    """K8sRunLauncher's run Job: its own config, then the run's `dagster-k8s/config` tag."""
    user = K8sContainerContext.create_for_run(run, None, include_run_tags=True)
    return _render(_launcher_context().merge(user), ["dagster", "api", "execute_run"], "run_worker")


def _step_pod_job(run: DagsterRun, platform: Platform) -> dict[str, Any]:
    """K8sStepHandler's step Job for the chain step: the launcher's config (no run tags), the
    executor's step_k8s_config, then the step's op tags."""
    context = _launcher_context().merge(
        K8sContainerContext.create_for_run(run, None, include_run_tags=False)
    )
    context = context.merge(
        K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(STEP_K8S_CONFIG))
    )
    op_tags = _op_tags(dg.AssetKey([platform.slug, "compatibility_record"]))
    context = context.merge(
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(op_tags))
    )
    return _render(context, ["dagster", "api", "execute_step"], "step_worker")


def _placement(job: dict[str, Any]) -> tuple[dict, dict, dict, list]:
    """nodeSelector, requests, limits and tolerations of a rendered Job's pod."""
    pod = _pod(job)
    (container,) = pod["containers"]
    resources = container["resources"]
    return pod["node_selector"], resources["requests"], resources["limits"], _tolerations(pod)


def _assert_build_placement(job: dict[str, Any], platform: Platform) -> None:
    selector, requests, limits, tolerations = _placement(job)
    assert selector == {"kubernetes.io/arch": platform.arch}
    assert requests == BUILD_REQUESTS
    assert limits["memory"] == "4Gi", "the build's limit wins over the launcher's 1Gi"
    if platform.gpu:
        assert limits["nvidia.com/gpu"] == "1"
        assert tolerations == [GPU_TOLERATION]
    else:
        assert "nvidia.com/gpu" not in limits
        assert tolerations == []


def _assert_reaches_the_engine(job: dict[str, Any]) -> None:
    pod = _pod(job)
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if e["value"] is not None}
    assert env["DOCKER_HOST"] == DOCKER_HOST_IN_POD
    assert env["FACTORY_DATA_DIR"] == DATA_DIR_ON_NODE
    mounts = {m["name"]: m["mount_path"] for m in container["volume_mounts"]}
    assert mounts == {"factory-docker": DOCKER_SOCKET_DIR, "factory-data": DATA_DIR_ON_NODE}
    host_paths = {v["name"]: v["host_path"]["path"] for v in pod["volumes"] if v["host_path"]}
    assert host_paths == {"factory-docker": DOCKER_SOCKET_DIR, "factory-data": DATA_DIR_ON_NODE}


def _is_build_pod(job: dict[str, Any]) -> bool:
    return _placement(job)[1] == BUILD_REQUESTS


def test_build_jobs_carry_their_platforms_placement_as_a_run_tag():
    for platform in PLATFORMS:
        job = defs.resolve_job_def(build_job_name(platform.slug))
        assert job.tags == build_job_tags(platform)
        op_tags = _op_tags(dg.AssetKey([platform.slug, "image"]))
        run_tag = build_job_tags(platform, RUN_POD)[K8S_CONFIG_TAG]
        assert get_user_defined_k8s_config({K8S_CONFIG_TAG: run_tag}) == (
            get_user_defined_k8s_config(op_tags)
        )
        # Under the step-pod executor the run pod only waits: no build node, no GPU for it.
        assert K8S_CONFIG_TAG not in build_job_tags(platform, STEP_POD)


@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: p.slug)
def test_run_pod_shape_places_the_build_run_pod(platform):
    job = _run_pod_job(_build_run(platform, RUN_POD))
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "run_worker"
    _assert_build_placement(job, platform)
    _assert_reaches_the_engine(job)


@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: p.slug)
def test_step_pod_shape_places_the_chain_step_pod(platform):
    run = _build_run(platform, STEP_POD)
    step = _step_pod_job(run, platform)
    _assert_build_placement(step, platform)
    _assert_reaches_the_engine(step)
    # Its run pod stays the launcher's small amd64 pod, without a GPU.
    selector, requests, limits, tolerations = _placement(_run_pod_job(run))
    assert selector == {"kubernetes.io/arch": "amd64"}
    assert requests == LAUNCHER_REQUESTS
    assert "nvidia.com/gpu" not in limits
    assert tolerations == []


@pytest.mark.parametrize("shape", [RUN_POD, STEP_POD])
@pytest.mark.parametrize("platform", PLATFORMS, ids=lambda p: p.slug)
def test_exactly_one_build_pod_per_combination(platform, shape):
    job = defs.resolve_job_def(build_job_name(platform.slug))
    plan = create_execution_plan(job, run_config={}, tags=_build_run(platform, shape).tags)
    assert plan.step_keys_to_execute == [chain_step_name(platform)]
    run = _build_run(platform, shape)
    if shape == RUN_POD:
        # The in-process executor starts no pod: the run pod executes the step.
        assert executor_for_environment({"FACTORY_EXECUTOR": shape}) is dg.in_process_executor
        pods = [_run_pod_job(run)]
    else:
        # k8s_job_executor starts one Job per step key.
        pods = [_run_pod_job(run)] + [
            _step_pod_job(run, platform) for _ in plan.step_keys_to_execute
        ]
    assert [_is_build_pod(pod) for pod in pods].count(True) == 1


def test_executor_is_picked_by_the_environment():
    assert executor_for_environment({}) is dg.multi_or_in_process_executor
    assert executor_for_environment({"FACTORY_EXECUTOR": "multiprocess"}) is (
        dg.multi_or_in_process_executor
    )
    k8s_executor = executor_for_environment({"FACTORY_EXECUTOR": "k8s"})

    @dg.asset
    def probe() -> None: ...

    probe_defs = dg.Definitions(assets=[probe], executor=k8s_executor)
    job = probe_defs.resolve_implicit_global_asset_job_def()
    execution = dg.validate_run_config(job, {})["execution"]
    (config,) = execution.values()
    assert (
        config["step_k8s_config"]["container_config"]["env"]
        == STEP_K8S_CONFIG["container_config"]["env"]
    )
    with pytest.raises(FactoryError, match="FACTORY_EXECUTOR='docker' is not one of"):
        executor_for_environment({"FACTORY_EXECUTOR": "docker"})


# --- deploy/dagster.yaml ------------------------------------------------------------------------


def _instance_yaml() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "dagster.yaml").read_text())


def test_production_instance_config_validates_against_dagsters_schema():
    config, instance_class = dagster_instance_config(str(DEPLOY), "dagster.yaml")
    assert instance_class is None
    assert set(config["storage"]) == {"postgres"}
    # Credentials only from the environment.
    pg = config["storage"]["postgres"]["postgres_db"]
    assert all(set(pg[f]) == {"env"} for f in ("username", "password", "hostname", "db_name"))
    # SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql:// (not installed).
    assert pg["scheme"] == "postgresql+psycopg2"
    assert config["concurrency"]["pools"]["granularity"] == "op"
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_retries"]["enabled"] is True


@pytest.mark.parametrize(
    ("section", "class_name"),
    [
        ("run_launcher", "K8sRunLauncher"),
        ("run_coordinator", "QueuedRunCoordinator"),
        ("compute_logs", "S3ComputeLogManager"),
        ("scheduler", "DagsterDaemonScheduler"),
    ],
)
def test_each_configured_class_accepts_its_config(section, class_name):
    """The instance schema takes any `config:`; each class validates its own when loaded."""
    entry = _instance_yaml()[section]
    assert entry["class"] == class_name
    cls = class_from_code_pointer(entry["module"], entry["class"])
    result = validate_config(cls.config_type(), entry.get("config", {}))
    assert result.success, [e.message for e in result.errors]


# --- deploy/helm/values.yaml --------------------------------------------------------------------

# Top-level keys of the official chart's values (helm/dagster/values.yaml, chart 1.13): a typo
# here would be silently ignored by Helm.
CHART_TOP_LEVEL_KEYS = {
    "global",
    "nameOverride",
    "fullnameOverride",
    "rbacEnabled",
    "serviceAccount",
    "imagePullSecrets",
    "dagsterWebserver",
    "dagster-user-deployments",
    "pipelineRun",
    "computeLogManager",
    "pythonLogs",
    "runLauncher",
    "postgresql",
    "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret",
    "rabbitmq",
    "redis",
    "flower",
    "ingress",
    "dagsterDaemon",
    "busybox",
    "migrate",
    "telemetry",
    "scheduler",
    "retention",
    "additionalInstanceConfig",
    "concurrency",
    "defsStateStorage",
}


def _values() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _snake_keys(value: Any) -> Any:
    """The chart's camelCase keys as the instance's snake_case ones, recursively (labels such as
    `kubernetes.io/arch` have no capitals and stay as they are)."""
    if isinstance(value, dict):
        return {_snake(k): _snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_keys(v) for v in value]
    return value


def test_helm_values_use_only_chart_keys():
    assert set(_values()) <= CHART_TOP_LEVEL_KEYS


def test_helm_values_deploy_the_code_location_in_the_run_pod_shape():
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    workspace = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]
    args = deployment["dagsterApiGrpcArgs"]
    assert args == ["--module-name", module["module_name"], "--attribute", module["attribute"]]
    assert deployment["name"] == module["location_name"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    # One pod per combination: the run pod executes the build's one step.
    assert {"name": "FACTORY_EXECUTOR", "value": "in_process"} in deployment["env"]
    assert deployment["envConfigMaps"] == [{"name": "factory-settings"}]
    assert deployment["envSecrets"] == [{"name": "factory-s3"}]
    assert isinstance(deployment["image"]["tag"], str)


def test_helm_values_configure_launcher_storage_and_daemon():
    values = _values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["loadInclusterConfig"] is True
    pg = values["postgresql"]
    assert pg["enabled"] is False, "external PostgreSQL; the bundled one is for trials"
    assert pg["postgresqlHost"] and pg["postgresqlUsername"] and pg["postgresqlDatabase"]
    assert pg["postgresqlPassword"] == "", "the password comes from the secret, not the values"
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"] == "dagster-postgresql-secret"
    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] is True
    assert daemon["runCoordinator"]["enabled"] is True
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["concurrency"]["enabled"] is True
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"


def test_helm_values_and_production_instance_agree():
    values, instance = _values(), _instance_yaml()
    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert (
        queued["dequeueIntervalSeconds"]
        == instance["run_coordinator"]["config"]["dequeue_interval_seconds"]
    )
    assert (
        values["concurrency"]["runs"]["maxConcurrentRuns"]
        == instance["concurrency"]["runs"]["max_concurrent_runs"]
    )
    assert {_snake(k): v for k, v in values["concurrency"]["pools"].items()} == (
        instance["concurrency"]["pools"]
    )
    assert {_snake(k): v for k, v in daemon["runMonitoring"].items()} == instance["run_monitoring"]
    assert {_snake(k): v for k, v in daemon["runRetries"].items()} == instance["run_retries"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    prod = instance["run_launcher"]["config"]
    assert [m["name"] for m in launcher["envConfigMaps"]] == prod["env_config_maps"]
    assert [s["name"] for s in launcher["envSecrets"]] == prod["env_secrets"]
    run_k8s = launcher["runK8sConfig"]
    assert _snake_keys(run_k8s["containerConfig"]) == prod["run_k8s_config"]["container_config"]
    assert _snake_keys(run_k8s["podSpecConfig"]) == prod["run_k8s_config"]["pod_spec_config"]
    pg = instance["storage"]["postgres"]["postgres_db"]
    assert values["postgresql"]["postgresqlScheme"] == pg["scheme"]
    assert values["postgresql"]["postgresqlParams"] == pg["params"]
    assert values["global"]["dagsterHome"] == prod["dagster_home"]
    assert values["global"]["postgresqlSecretName"] == prod["postgres_password_secret"]
    assert values["global"]["serviceAccountName"] == prod["service_account_name"]


# --- deploy/k8s/*.yaml --------------------------------------------------------------------------


def _check_fields(data: Any, type_name: str, path: str) -> None:
    """Every key of a manifest is a field of its Kubernetes API type, recursively."""
    if type_name.startswith("list["):
        for i, item in enumerate(data):
            _check_fields(item, type_name[5:-1], f"{path}[{i}]")
        return
    if type_name.startswith("dict("):
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        for key, value in data.items():
            _check_fields(value, inner, f"{path}.{key}")
        return
    model = getattr(k8s, type_name, None)
    if model is None:  # str, int, bool, object
        return
    assert isinstance(data, dict), f"{path}: expected a {type_name} mapping"
    field_of = {json_key: attr for attr, json_key in model.attribute_map.items()}
    unknown = set(data) - set(field_of)
    assert not unknown, f"{path}: {type_name} has no field {sorted(unknown)}"
    for key, value in data.items():
        _check_fields(value, model.openapi_types[field_of[key]], f"{path}.{key}")


def _manifest(name: str, kind: str) -> dict[str, Any]:
    manifest = yaml.safe_load((DEPLOY / "k8s" / name).read_text())
    assert manifest["kind"] == kind
    type_name = f"V1{kind}"
    _check_fields(manifest, type_name, name)
    # Required fields (container names, selectors...) are checked by the client's own models.
    k8s.ApiClient()._ApiClient__deserialize(manifest, type_name)
    return manifest


def test_engine_daemonset_shares_what_step_pods_expect():
    pod = _manifest("docker-engine.yaml", "DaemonSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert host_paths["socket"] == mounts["socket"] == DOCKER_SOCKET_DIR
    assert f"--host={DOCKER_HOST_IN_POD}" in container["args"]
    # Same path inside and outside: bind mounts of staged test scripts resolve on the engine.
    assert host_paths["factory-data"] == mounts["factory-data"] == DATA_DIR_ON_NODE
    assert GPU_TOLERATION in pod["tolerations"]
    assert "kubernetes.io/arch" not in pod["nodeSelector"], "both arches need an engine"


def test_pool_limits_job_applies_the_repo_limits_to_the_chart_instance():
    manifest = _manifest("pool-limits-job.yaml", "Job")
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "factory_assets.pools"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DAGSTER_HOME"]["value"] == DAGSTER_HOME
    secret = env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "dagster-postgresql-secret", "key": "postgresql-password"}
    (volume,) = pod["volumes"]
    assert volume["configMap"]["name"] == "dagster-instance"
    assert container["volumeMounts"][0]["mountPath"] == f"{DAGSTER_HOME}/dagster.yaml"


def test_settings_config_map_holds_valid_pool_limits():
    data = _manifest("factory-settings.yaml", "ConfigMap")["data"]
    assert parse_pool_limits(data["FACTORY_POOL_LIMITS"]) == {"amd64": 8, "arm64": 4, "gpu": 2}
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values are strings"
    assert not any("PASSWORD" in k or "SECRET" in k for k in data), "secrets go in Secrets"


def test_manifest_check_catches_a_misspelt_field():
    with pytest.raises(AssertionError, match="V1PodSpec has no field \\['nodeSelecter'\\]"):
        _check_fields({"nodeSelecter": {}}, "V1PodSpec", "pod")


def test_deploy_files_are_where_the_docs_say():
    docs = (PROJECT_ROOT / "docs" / "deploy.md").read_text()
    for path in Path(DEPLOY).rglob("*"):
        if path.is_file():
            assert str(path.relative_to(PROJECT_ROOT)) in docs, path
