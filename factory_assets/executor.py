"""The executor of the code location's jobs, picked by one environment variable.

Locally (no FACTORY_EXECUTOR, or `multiprocess`) it is Dagster's default executor, so wiring this
in changes nothing on one machine. On Kubernetes the user code deployment sets
`FACTORY_EXECUTOR=k8s` and every step becomes its own Kubernetes Job: placement (arch
nodeSelector, GPU limit and toleration, CPU/memory requests) comes from each asset's
`dagster-k8s/config` op tags, and what every step pod shares comes from `STEP_K8S_CONFIG` below.

Step pods reach a Docker Engine through DOCKER_HOST: a per-node engine (the DaemonSet in
deploy/k8s/docker-engine.yaml, running dockerd with BuildKit) shares its socket in a hostPath
folder. Its layer cache outlives each step pod, and a new node starts warm from the per-arch
registry cache refs. Test scripts are bind-mounted into test containers by path, and a path is
resolved by the engine, not by the pod: so FACTORY_DATA_DIR (whose `work/` holds the staged
scripts) is a second hostPath, mounted at the same path in the step pods and in the engine.
"""

import os
from typing import Any

import dagster as dg
from dagster_k8s import k8s_job_executor

from factory.errors import FactoryError

ENV_VAR = "FACTORY_EXECUTOR"
EXECUTORS = ("multiprocess", "k8s")

# hostPath folders shared with the per-node engine (deploy/k8s/docker-engine.yaml): its socket,
# and the data dir whose paths the engine must see as the step pod does.
DOCKER_SOCKET_DIR = "/run/factory-docker"
DOCKER_HOST_IN_POD = f"unix://{DOCKER_SOCKET_DIR}/docker.sock"
DATA_DIR_ON_NODE = "/var/lib/factory"

STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "env": [
            {"name": "DOCKER_HOST", "value": DOCKER_HOST_IN_POD},
            {"name": "DOCKER_BUILDKIT", "value": "1"},
            {"name": "FACTORY_DATA_DIR", "value": DATA_DIR_ON_NODE},
        ],
        "volume_mounts": [
            {"name": "factory-docker", "mount_path": DOCKER_SOCKET_DIR},
            {"name": "factory-data", "mount_path": DATA_DIR_ON_NODE},
        ],
        # Steps without placement tags (the matrix) are small; build steps ask for more through
        # their op tags, which are merged over this.
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
    },
    "pod_spec_config": {
        "volumes": [
            {
                "name": "factory-docker",
                "host_path": {"path": DOCKER_SOCKET_DIR, "type": "Directory"},
            },
            {
                "name": "factory-data",
                "host_path": {"path": DATA_DIR_ON_NODE, "type": "DirectoryOrCreate"},
            },
        ],
    },
}


def executor_for_environment(
    environ: dict[str, str] | None = None,
) -> dg.ExecutorDefinition:
    """The executor FACTORY_EXECUTOR names: `k8s` or `multiprocess` (the default when unset)."""
    env = os.environ if environ is None else environ
    name = (env.get(ENV_VAR) or "multiprocess").strip().lower()
    if name == "k8s":
        return k8s_job_executor.configured(
            {"step_k8s_config": STEP_K8S_CONFIG}, name="factory_k8s_job_executor"
        )
    if name == "multiprocess":
        # Dagster's own default: multiprocess, unless a run's config asks for in_process.
        return dg.multi_or_in_process_executor
    msg = (
        f"{ENV_VAR}={env.get(ENV_VAR)!r} is not one of {', '.join(EXECUTORS)}; "
        "unset it for local runs"
    )
    raise FactoryError(msg)
