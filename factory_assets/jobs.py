"""Jobs: one per platform chain (a run cannot span two partitions definitions) and the matrix.

A build run is one combination and one step. On Kubernetes that step runs either in the run pod
itself (K8sRunLauncher, `FACTORY_EXECUTOR=in_process`) or in one step pod (`FACTORY_EXECUTOR=k8s`).
K8sRunLauncher places a run pod by the run's `dagster-k8s/config` tag, and step pods read only op
tags; so the build jobs carry their platform's placement as a run tag too, except under the
step-pod executor, where the run pod only waits on the step and must not take a build node's
slot (or a GPU) of its own.
"""

import json
import os

import dagster as dg

from factory.plan.decisions import PlanItem
from factory.platforms import PLATFORMS, Platform
from factory_assets.partitions import PARTITIONS
from factory_assets.platforms import k8s_op_tags

K8S_CONFIG_TAG = "dagster-k8s/config"
# The executor kind whose steps are pods of their own (factory_assets/executor.py).
STEP_POD_EXECUTOR = "k8s"


def build_job_name(slug: str) -> str:
    return f"build_{slug}"


def build_job_tags(platform: Platform, executor: str | None = None) -> dict[str, str]:
    """The tags every run of `platform`'s build job carries, for the executor kind `executor`
    (default: FACTORY_EXECUTOR)."""
    if executor is None:
        executor = os.environ.get("FACTORY_EXECUTOR") or "multiprocess"
    tags = {
        "factory/platform": platform.name,
        "factory/pool": platform.pool,
        # Run retries are for lost run workers only; steps retry transient trouble themselves
        # and a failing test is a result, not something to retry.
        "dagster/retry_on_asset_or_op_failure": "false",
    }
    if executor.strip().lower() != STEP_POD_EXECUTOR:
        # The run pod is the build pod: it goes where the step's op tags would put a step pod.
        tags[K8S_CONFIG_TAG] = json.dumps(k8s_op_tags(platform)[K8S_CONFIG_TAG], sort_keys=True)
    return tags


BUILD_JOBS = [
    dg.define_asset_job(
        name=build_job_name(p.slug),
        selection=dg.AssetSelection.groups(p.slug),
        partitions_def=PARTITIONS[p.slug],
        description=f"Render, build, test, SBOM and record one manifest on {p.name}.",
        tags=build_job_tags(p),
    )
    for p in PLATFORMS
]

MATRIX_JOB = dg.define_asset_job(
    name="compatibility_matrix_job",
    selection=dg.AssetSelection.assets("compatibility_matrix", "multiarch_index"),
    description="Rebuild the compatibility matrix from the records; publish ready multi-arch "
    "indexes.",
)


def run_tags(item: PlanItem) -> dict[str, str]:
    """Tags naming the combination, its pool and why it runs; high priority is dequeued first."""
    return {
        "factory/manifest_id": item.manifest_id,
        "factory/platform": item.platform,
        "factory/pool": item.pool,
        "factory/record_key": item.record_key,
        "factory/reasons": ",".join(item.reasons),
        "dagster/priority": "10" if item.priority == "high" else "0",
    }
