"""Factory's schedules, all STOPPED until an operator starts them: nightly re-verification (every
combination is re-tested; images are rebuilt only where a key changed, as the image step reuses
the registry's image for an unchanged build key), and `operator_schedule` for the jobs that run
on a plain cron (prewarm, retention)."""

import os

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string

from factory.platforms import PLATFORMS, Platform
from factory.safe_json import printable
from factory.settings import SettingsError
from factory_assets.jobs import BUILD_JOBS, build_job_name
from factory_assets.partitions import PARTITIONS


def env_cron(name: str, default: str) -> str:
    """The cron expression in environment variable `name` (unset or blank: `default`); a
    SettingsError naming the variable when Dagster would refuse it."""
    raw = os.environ.get(name, "")
    cron = raw.strip() or default
    if not is_valid_cron_string(cron):
        msg = (
            f"{name}={printable(raw, limit=200)} is not a cron expression "
            f"(five fields, e.g. {default!r})"
        )
        raise SettingsError(msg)
    return cron


NIGHTLY_CRON = env_cron("FACTORY_NIGHTLY_CRON", "0 3 * * *")


def operator_schedule(job: dg.JobDefinition, cron: str, description: str) -> dg.ScheduleDefinition:
    """`job` on `cron`, named after it (`retention_job` runs on `retention_schedule`).

    Stopped until an operator starts it: deleting images or pushing cache refs on a timer is a
    decision for the deployment, not a default.
    """
    return dg.ScheduleDefinition(
        name=job.name.removesuffix("_job") + "_schedule",
        job=job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=description,
    )


def build_nightly_schedule(platform: Platform, job) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"nightly_reverify_{platform.slug}",
        cron_schedule=NIGHTLY_CRON,
        job=job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Re-test every {platform.name} combination once a night.",
    )
    def nightly(context: dg.ScheduleEvaluationContext):
        keys = context.instance.get_dynamic_partitions(PARTITIONS[platform.slug].name)
        if not keys:
            return dg.SkipReason(f"no {platform.name} partitions yet")
        stamp = context.scheduled_execution_time.strftime("%Y-%m-%d")
        return [
            dg.RunRequest(
                run_key=f"nightly-{stamp}-{platform.slug}-{key}",
                partition_key=key,
                tags={
                    "factory/manifest_id": key,
                    "factory/platform": platform.name,
                    "factory/pool": platform.pool,
                    "factory/reasons": "nightly",
                },
            )
            for key in keys
        ]

    return nightly


_JOBS = {job.name: job for job in BUILD_JOBS}
NIGHTLY_SCHEDULES = [
    build_nightly_schedule(p, _JOBS[build_job_name(p.slug)]) for p in PLATFORMS if not p.gpu
]
