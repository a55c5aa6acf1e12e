"""Jobs: one per platform chain (a run cannot span two partitions definitions) and the matrix."""

import dagster as dg

from factory.planning import PlanItem
from factory.platforms import PLATFORMS
from factory_assets.partitions import PARTITIONS


def build_job_name(slug: str) -> str:
    return f"build_{slug}"


BUILD_JOBS = [
    dg.define_asset_job(
        name=build_job_name(p.slug),
        selection=dg.AssetSelection.groups(p.slug),
        partitions_def=PARTITIONS[p.slug],
        description=f"Render, build, test, SBOM and record one manifest on {p.name}.",
        tags={
            "factory/platform": p.name,
            "factory/pool": p.pool,
            # Run retries are for lost run workers only; steps retry transient trouble themselves
            # and a failing test is a result, not something to retry.
            "dagster/retry_on_asset_or_op_failure": "false",
        },
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
