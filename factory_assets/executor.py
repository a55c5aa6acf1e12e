"""The executor of the code location's jobs, picked by one environment variable.

Locally (no FACTORY_EXECUTOR, or `multiprocess`) it is Dagster's default executor, so wiring this
in changes nothing on one machine. On Kubernetes the user code deployment sets
`FACTORY_EXECUTOR=k8s` and every step becomes its own Kubernetes Job: placement (arch
nodeSelector, GPU limit and toleration, CPU/memory requests) comes from each asset's
`dagster-k8s/config` op tags, and what every step pod shares comes from `STEP_K8S_CONFIG` below.

Step pods reach a Docker Engine through DOCKER_HOST. The default is a per-node engine (a DaemonSet
running dockerd with BuildKit, see docs/deploy.md) that shares its socket in a hostPath folder:
the engine's layer cache outlives each step pod, and a new node starts warm from the per-arch
registry cache refs.
"""

import os
from typing import Any

import dagster as dg
from dagster_k8s import k8s_job_executor

from factory.errors import FactoryError

ENV_VAR = "FACTORY_EXECUTOR"
EXECUTORS = ("multiprocess", "k8s")

# The hostPath folder where the per-node engine DaemonSet puts docker.sock (docs/deploy.md).
DOCKER_SOCKET_DIR = "/run/factory-docker"
DOCKER_HOST_IN_POD = f"unix://{DOCKER_SOCKET_DIR}/docker.sock"

STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "env": [
            {"name": "DOCKER_HOST", "value": DOCKER_HOST_IN_POD},
            {"name": "DOCKER_BUILDKIT", "value": "1"},
        ],
        "volume_mounts": [{"name": "factory-docker", "mount_path": DOCKER_SOCKET_DIR}],
        # Steps without placement tags (the matrix) are small; build steps ask for more through
        # their op tags, which are merged over this.
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
    },
    "pod_spec_config": {
        "volumes": [
            {
                "name": "factory-docker",
                "host_path": {"path": DOCKER_SOCKET_DIR, "type": "Directory"},
            }
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
    msg = f"{ENV_VAR}={env.get(ENV_VAR)!r} is not one of {', '.join(EXECUTORS)}; unset it for local runs"
    raise FactoryError(msg)
