"""Dagster's view of the platform table: pools and Kubernetes placement as op tags.

The table itself lives in `factory.platforms` (no Dagster import) so the CLI and the planner share
it. Step pods of `k8s_job_executor` read only op tags, so placement lives on the assets.
"""

from factory.platforms import PLATFORMS, Platform

__all__ = ["PLATFORMS", "Platform", "k8s_op_tags"]


def k8s_op_tags(platform: Platform) -> dict:
    """The `dagster-k8s/config` tag that puts this platform's steps on the right nodes."""
    return {
        "dagster-k8s/config": {
            "pod_spec_config": platform.k8s_pod_spec,
            "container_config": platform.k8s_container,
        }
    }
