"""Dagster's view of the platform table: pools and Kubernetes placement as op tags.

The table itself lives in `factory.platforms` (no Dagster import) so the CLI and the planner share
it. Step pods of `k8s_job_executor` read only op tags, so placement lives on the assets. The same
goes for dagster-celery, which routes a step by its `dagster-celery/queue` op tag: the pool's name.
"""

from factory.platforms import PLATFORMS, Platform
from factory.workers.celery_settings import QUEUE_TAG, queue_for_pool

__all__ = ["PLATFORMS", "Platform", "celery_op_tags", "chain_op_tags", "k8s_op_tags"]


def k8s_op_tags(platform: Platform) -> dict:
    """The `dagster-k8s/config` tag that puts this platform's steps on the right nodes."""
    return {
        "dagster-k8s/config": {
            "pod_spec_config": platform.k8s_pod_spec,
            "container_config": platform.k8s_container,
        }
    }


def celery_op_tags(platform: Platform) -> dict:
    """The `dagster-celery/queue` tag that sends this platform's steps to its pool's queue."""
    return {QUEUE_TAG: queue_for_pool(platform.pool)}


def chain_op_tags(platform: Platform) -> dict:
    """Every placement tag of a platform's chain step: Kubernetes nodes and the Celery queue."""
    return {**k8s_op_tags(platform), **celery_op_tags(platform)}
