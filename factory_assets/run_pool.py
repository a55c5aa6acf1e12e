"""Which pool, platform and manifest a run belongs to, whatever launched it.

`factory run`, the sensors, the schedules and the build jobs' own tags name the combination
(`factory/pool`, `factory/platform`, `factory/manifest_id`). A run launched from the UI's asset
graph, an asset backfill, declarative automation or `dagster asset materialize` carries none of
them: it is a run of an implicit asset job with an asset selection and a `dagster/partition` tag.
For those the pool is read from the selected assets' platform (their key's first part is the
platform's slug) and the manifest from the partition.
"""

from dataclasses import dataclass

import dagster as dg
from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME
from dagster._core.definitions.materialize import EPHEMERAL_JOB_NAME

from factory.platforms import BY_NAME, PLATFORMS

POOL_TAG = "factory/pool"
PLATFORM_TAG = "factory/platform"
MANIFEST_TAG = "factory/manifest_id"
PARTITION_TAG = "dagster/partition"
# Jobs whose runs name their assets but not their pool: the UI's and backfills' implicit asset
# job, and the job `dagster asset materialize` / `dg.materialize` build on the fly.
IMPLICIT_JOBS = (IMPLICIT_ASSET_JOB_NAME, EPHEMERAL_JOB_NAME)
BY_SLUG = {p.slug: p for p in PLATFORMS}


@dataclass(frozen=True)
class RunCombination:
    """Where a run queues and what it builds; manifest_id is None for an unpartitioned run."""

    pool: str
    platform: str | None
    manifest_id: str | None


def selected_platforms(run: dg.DagsterRun) -> set[str]:
    """The platforms whose chain assets the run selected (by slug, the key's first part)."""
    found = set()
    for key in run.asset_selection or ():
        platform = BY_SLUG.get(key.path[0]) if len(key.path) > 1 else None
        if platform is not None:
            found.add(platform.name)
    return found


def run_combination(run: dg.DagsterRun) -> RunCombination | None:
    """The run's pool, platform and manifest from its tags, else from its asset selection and
    partition; None for a run that builds nothing (the matrix, retention, prewarm)."""
    tags = run.tags
    manifest_id = tags.get(MANIFEST_TAG) or tags.get(PARTITION_TAG)
    if tags.get(POOL_TAG):
        return RunCombination(tags[POOL_TAG], tags.get(PLATFORM_TAG), manifest_id)
    platforms = selected_platforms(run)
    if len(platforms) != 1:  # none, or a selection no single pool runs (Dagster refuses it)
        return None
    (name,) = platforms
    return RunCombination(BY_NAME[name].pool, name, manifest_id)


def untagged_runs(
    instance: dg.DagsterInstance, statuses, **filters
) -> list[tuple[dg.RunRecord, RunCombination]]:
    """Implicit-asset-job runs in `statuses` (and the other RunsFilter fields) that carry no pool
    tag, with the combination their selection names. Bounded by what is queued, running or
    recently finished, never the whole history."""
    found = []
    for job_name in IMPLICIT_JOBS:
        for record in instance.get_run_records(
            dg.RunsFilter(job_name=job_name, statuses=list(statuses), **filters)
        ):
            if record.dagster_run.tags.get(POOL_TAG):
                continue  # counted by the indexed tag queries
            combination = run_combination(record.dagster_run)
            if combination is not None:
                found.append((record, combination))
    return found
