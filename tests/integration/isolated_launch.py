"""The launcher side of the step-isolation test: create a combination's run, print its pod command.

Run as `python -m tests.integration.isolated_launch MANIFEST_ID PLATFORM` in an environment whose
DAGSTER_HOME holds a production `dagster.yaml` (PostgreSQL). It does what the code server and the
daemon's K8sRunLauncher do for a run: apply the pool limits and sync the store's partitions into
the instance, create the run of the platform's build job for that partition (with the job's tags),
and build the arguments a pod would be started with: `dagster api execute_run` for the run pod
(`ExecuteRunArgs`, as K8sRunLauncher makes them) and `dagster api execute_step` for the chain's
step pod (`ExecuteStepArgs`, as the step-pod shape's run worker makes them for K8sStepHandler). It
prints one JSON object: `run_id`, `run_args`, `step_args`, `tags`. It executes nothing.

`instance_ref` is left out of the arguments: the run pod reads the instance from its own
DAGSTER_HOME, which on Kubernetes is the chart's instance ConfigMap mounted at the same path. The
executor is the code location's, from FACTORY_EXECUTOR (`in_process` in the run-pod shape), so the
run is created without run config, as a sensor or the UI creates it.
"""

import json
import sys

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.retries import RetryMode
from dagster._grpc.types import ExecuteRunArgs, ExecuteStepArgs

from factory.platforms import platform as lookup_platform
from factory.settings import PROJECT_ROOT, Settings
from factory.store.load import load_store
from factory_assets.instance import sync_partitions
from factory_assets.jobs import build_job_name
from factory_assets.platform_chain import chain_step_name
from factory_assets.pools import apply_pool_limits


def launch(manifest_id: str, platform_name: str) -> dict:
    settings = Settings.from_env()
    platform = lookup_platform(platform_name)
    repository = ReconstructableRepository.for_module(
        "factory_assets.definitions", "defs", working_directory=str(PROJECT_ROOT)
    )
    recon_job = repository.get_reconstructable_job(build_job_name(platform.slug))
    job = recon_job.get_definition()
    with dg.DagsterInstance.get() as instance:
        apply_pool_limits(instance)
        sync_partitions(instance, load_store(settings.manifest_store))
        tags = {
            **{k: v if isinstance(v, str) else json.dumps(v) for k, v in job.tags.items()},
            **job.get_tags_for_partition_key(manifest_id, selected_asset_keys=None),
            "factory/manifest_id": manifest_id,
        }
        run = instance.create_run_for_job(
            job_def=job,
            run_config={},
            tags=tags,
            job_code_origin=recon_job.get_python_origin(),
        )
    run_args = ExecuteRunArgs(
        job_origin=run.job_code_origin,
        run_id=run.run_id,
        instance_ref=None,
        set_exit_code_on_failure=True,
    ).get_command_args()
    step_args = ExecuteStepArgs(
        job_origin=run.job_code_origin,
        run_id=run.run_id,
        step_keys_to_execute=[chain_step_name(platform)],
        instance_ref=None,
        retry_mode=RetryMode.DISABLED,
        print_serialized_events=False,
    ).get_command_args()
    return {
        "run_id": run.run_id,
        "run_args": list(run_args),
        "step_args": list(step_args),
        "tags": dict(run.tags),
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(launch(sys.argv[1], sys.argv[2])) + "\n")
