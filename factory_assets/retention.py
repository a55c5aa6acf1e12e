"""Retention as a Dagster job: the same plan and apply as `factory gc`, once a week when enabled.

The schedule ships STOPPED: deleting images is a decision an operator turns on, not a default.
Counts go on the op's output metadata (plotted across runs in the UI) and onto the run as
`factory/gc_*` tags, so the runs list shows what each gc removed without opening it.

Records are read through `record_store.open()`, so the registry part works with the S3 record
store too; evidence files are only removed under the local data dir (none exist there with S3,
where a bucket lifecycle rule is the tool for old evidence).
"""

from pathlib import Path

import dagster as dg

from factory.build.engine_prune import apply_engine_prune, plan_engine_prune
from factory.build.stack_gc import plan_stack_gc
from factory.records.gc_apply import apply_gc, local_registry_config
from factory.records.gc_source import IndexedRecords
from factory.records.retention import DEFAULT_EVIDENCE_DAYS, DEFAULT_KEEP, plan_gc
from factory_assets.schedules import env_cron, operator_schedule
from resources import DockerBuilder, ManifestStore, RecordStore, Registry

RETENTION_CRON = env_cron("FACTORY_RETENTION_CRON", "0 4 * * 0")
GC_TAG_PREFIX = "factory/gc_"
# Plan lines logged per run; the rest are counted, not listed, to keep the event log small.
MAX_LOGGED_LINES = 200


class RetentionConfig(dg.Config):
    """What to keep; the defaults are `factory gc`'s."""

    keep: int = DEFAULT_KEEP
    evidence_days: int = DEFAULT_EVIDENCE_DAYS
    dry_run: bool = False
    collect: bool = True
    # Also prune the engine (old build images, build cache past FACTORY_ENGINE_CACHE_GB) and
    # delete stack cache refs no manifest of the store uses.
    engine: bool = True
    stacks: bool = True


@dg.op(
    description="Delete image tags beyond the newest N per manifest x platform and old evidence; "
    "records are kept.",
)
def retention_gc(
    context: dg.OpExecutionContext,
    config: RetentionConfig,
    record_store: RecordStore,
    registry: Registry,
    docker_builder: DockerBuilder,
    manifest_store: ManifestStore,
) -> dict:
    data_dir = Path(record_store.data_dir)
    client = registry.client()
    index = record_store.open().index
    plan = plan_gc(
        IndexedRecords(index),
        client,
        keep=config.keep,
        evidence_days=config.evidence_days,
        data_dir=data_dir,
    )
    if config.stacks:
        plan_stack_gc(plan, manifest_store.load(), client)
    lines = plan.lines()
    for line in lines[:MAX_LOGGED_LINES]:
        context.log.info(line)
    if len(lines) > MAX_LOGGED_LINES:
        context.log.info(f"... and {len(lines) - MAX_LOGGED_LINES} more")
    summary: dict = {f"planned_{key}": value for key, value in plan.summary().items()}
    summary["dry_run"] = config.dry_run
    if not config.dry_run:
        registry_config = local_registry_config(data_dir, registry.address)
        result = apply_gc(
            plan,
            client,
            data_dir,
            registry_config=registry_config if config.collect else None,
            records_index=index,
        )
        summary.update(result.summary())
        if result.collect is not None:
            context.log.info(result.collect.detail)
    if config.engine:
        summary.update(_prune_engine(context, docker_builder, registry, config))
    counts = {k: v for k, v in summary.items() if isinstance(v, int) and not isinstance(v, bool)}
    context.instance.add_run_tags(
        context.run_id, {f"{GC_TAG_PREFIX}{key}": str(value) for key, value in counts.items()}
    )
    context.add_output_metadata(
        {
            **{key: dg.MetadataValue.int(value) for key, value in counts.items()},
            "dry_run": dg.MetadataValue.bool(config.dry_run),
            "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in plan.warnings) or "none"),
        }
    )
    return summary


def _prune_engine(
    context: dg.OpExecutionContext,
    docker_builder: DockerBuilder,
    registry: Registry,
    config: RetentionConfig,
) -> dict:
    """The engine part (`factory gc --engine`): the same plan and apply, counted."""
    engine = docker_builder.engine()
    plan = plan_engine_prune(engine, keep=config.keep, registry=registry.address)
    for line in plan.lines()[:MAX_LOGGED_LINES]:
        context.log.info(line)
    counts = {"engine_planned_tags": len(plan.removals)}
    if not config.dry_run:
        result = apply_engine_prune(engine, plan)
        for failure in result.failed:
            context.log.warning(f"engine prune: {failure}")
        counts.update(
            engine_tags_removed=len(result.removed),
            engine_image_bytes_freed=result.image_bytes_freed,
            engine_cache_bytes_reclaimed=result.cache_bytes_reclaimed,
        )
    return counts


@dg.job(
    name="retention_job",
    description="Registry and evidence retention (`factory gc`): keep the newest image tags per "
    "manifest x platform, evidence for 90 days unless released; records always.",
)
def retention_job() -> None:
    retention_gc()


retention_schedule = operator_schedule(
    retention_job,
    RETENTION_CRON,
    "Weekly retention gc (Sunday 04:00 by default; FACTORY_RETENTION_CRON).",
)
