"""The executor of the code location's jobs, picked by one environment variable.

Locally (no FACTORY_EXECUTOR, or `multiprocess`) it is Dagster's default executor, so wiring this
in changes nothing on one machine; `in_process` runs every step in the run's own process.

With `FACTORY_EXECUTOR=celery` (several hosts) it is dagster-celery's executor: each step goes to
its pool's Celery queue (the `dagster-celery/queue` op tag every chain carries: `amd64`, `arm64`,
`gpu`), where a `factory worker --pool P` on a host of that pool takes it. The broker and result
backend come from FACTORY_CELERY_BROKER / FACTORY_CELERY_BACKEND, the Celery settings from
`factory.workers.celery_settings` (shared with the workers). dagster-celery computes a task's
priority as "higher runs sooner", which is RabbitMQ's order but the reverse of Redis's; this
executor submits each step with the priority `celery_priority` derives from the run's
`dagster/priority` tag (10 for high-priority manifests) for the broker in use, so high priority is
served first on both.

On Kubernetes the user code deployment sets `FACTORY_EXECUTOR=k8s` and every step becomes its
own Kubernetes Job: placement (arch nodeSelector, GPU limit and toleration, CPU/memory requests)
comes from each asset's `dagster-k8s/config` op tags, and what every step pod shares comes from
`STEP_K8S_CONFIG` below.

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

from factory.errors import FactoryError
from factory.workers import celery_settings

ENV_VAR = "FACTORY_EXECUTOR"
EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")

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
        # Imported only for this shape: dagster-k8s (and the Kubernetes client) take 0.6 s.
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(
            {"step_k8s_config": STEP_K8S_CONFIG}, name="factory_k8s_job_executor"
        )
    if name == "multiprocess":
        # Dagster's own default: multiprocess, unless a run's config asks for in_process.
        return dg.multi_or_in_process_executor
    if name == "in_process":
        return dg.in_process_executor
    if name == "celery":
        return celery_executor_from_env(env)
    msg = (
        f"{ENV_VAR}={env.get(ENV_VAR)!r} is not one of {', '.join(EXECUTORS)}; "
        "unset it for local runs"
    )
    raise FactoryError(msg)


# -- Celery -------------------------------------------------------------------------------------


def celery_executor_from_env(env: dict[str, str] | os._Environ) -> dg.ExecutorDefinition:
    """dagster-celery's executor on the broker the environment names, with Factory's settings."""
    broker = celery_settings.broker_url(dict(env))
    backend = celery_settings.backend_url(dict(env))
    config = celery_settings.celery_config(
        broker, visibility_s=celery_settings.visibility_timeout_s(dict(env))
    )

    @dg.executor(
        name="factory_celery",
        requirements=dg.multiple_process_executor_requirements(),
    )
    def factory_celery(_init_context) -> dg.Executor:
        from dagster._core.execution.retries import RetryMode

        return _factory_celery_executor_class()(
            retries=RetryMode.ENABLED,
            broker=broker,
            backend=backend,
            config_source=config,
        )

    return factory_celery


def _factory_celery_executor_class() -> type:
    from dagster_celery.core_execution_loop import core_celery_execution_loop
    from dagster_celery.executor import CeleryExecutor, _submit_task

    class FactoryCeleryExecutor(CeleryExecutor):
        """CeleryExecutor whose task priority follows the run's urgency on any broker."""

        def execute(self, plan_context, execution_plan):
            broker = self.broker

            def submit(app, context, step, queue, _priority, known_state):
                urgency = celery_settings.run_urgency(dict(context.dagster_run.tags))
                priority = celery_settings.celery_priority(urgency, broker)
                return _submit_task(app, context, step, queue, priority, known_state)

            return core_celery_execution_loop(
                plan_context, execution_plan, step_execution_fn=submit
            )

    return FactoryCeleryExecutor
