"""The code location: every platform's chain, the matrix, jobs and resources, wired from the env."""

import dagster as dg

from factory.platforms import PLATFORMS
from factory.settings import Settings
from factory_assets.automation import results_automation_sensor
from factory_assets.executor import executor_for_environment
from factory_assets.inputs import INPUT_SOURCES
from factory_assets.jobs import BUILD_JOBS, MATRIX_JOB
from factory_assets.matrix import compatibility_matrix
from factory_assets.platform_chain import build_platform_chain
from factory_assets.prewarm import prewarm_job, prewarm_schedule
from factory_assets.publish import multiarch_index
from factory_assets.retention import retention_job, retention_schedule
from factory_assets.schedules import NIGHTLY_SCHEDULES
from resources import DockerBuilder, ManifestStore, Registry
from resources.record_store_selection import record_store_from_env
from sensors import (
    base_digest_sensor,
    dead_letter_sensor,
    executor_lost_sensor,
    manifest_change_sensor,
    queue_backlog_sensor,
)

_settings = Settings.from_env()

defs = dg.Definitions(
    assets=[
        *INPUT_SOURCES,
        *[a for p in PLATFORMS for a in build_platform_chain(p)],
        compatibility_matrix,
        multiarch_index,
    ],
    jobs=[*BUILD_JOBS, MATRIX_JOB, retention_job, prewarm_job],
    sensors=[
        manifest_change_sensor,
        base_digest_sensor,
        dead_letter_sensor,
        results_automation_sensor,
        executor_lost_sensor,
        queue_backlog_sensor,
    ],
    schedules=[*NIGHTLY_SCHEDULES, retention_schedule, prewarm_schedule],
    # Local: Dagster's multiprocess executor; FACTORY_EXECUTOR=k8s: one pod per step.
    executor=executor_for_environment(),
    resources={
        "manifest_store": ManifestStore(path=str(_settings.manifest_store)),
        "docker_builder": DockerBuilder(docker_host=""),
        "registry": Registry(address=_settings.registry),
        # The local folders, or S3 when FACTORY_S3_BUCKET is set.
        "record_store": record_store_from_env(_settings),
    },
)
