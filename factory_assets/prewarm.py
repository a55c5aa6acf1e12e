"""Prewarm job and schedule: push every stack's stable layers to its per-arch cache ref.

One op per platform, each in that platform's pool with its Kubernetes placement: a stack's arm64
layers are built on an arm64 executor and its amd64 layers on an amd64 one, as the builds that
will import them are. GPU combinations are prewarmed only where the engine has an NVIDIA
runtime; elsewhere the op reports that there is no GPU executor and does nothing.
"""

import dataclasses
import time

import dagster as dg

from factory.build.prewarm import StackBuild, prewarm
from factory.errors import FactoryError
from factory.platforms import PLATFORMS, Platform
from factory_assets.platform_chain import retry_delay_s
from factory_assets.platforms import k8s_op_tags
from factory_assets.schedules import env_cron, operator_schedule
from resources import DockerBuilder, ManifestStore, Registry

PREWARM_CRON = env_cron("FACTORY_PREWARM_CRON", "0 2 * * *")


def prewarm_retry_policy() -> dg.RetryPolicy:
    """Prewarm only builds and pushes cache refs, so any failure is safe to try again."""
    return dg.RetryPolicy(
        max_retries=2,
        delay=retry_delay_s(),
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


def _metadata(platform: Platform, builds: list[StackBuild], seconds: float) -> dict:
    total = sum(b.run_steps for b in builds)
    cached = sum(b.run_cached for b in builds)
    rows = "\n".join(
        f"| `{b.stack}` | {b.label} | `{b.cache_ref}` | {b.run_cached}/{b.run_steps} | "
        f"{b.seconds:.1f} |"
        for b in builds
    )
    table = "| stack | layers | cache ref | RUN steps cached | seconds |\n|---|---|---|---|---|\n"
    return {
        "platform": platform.name,
        "stacks": dg.MetadataValue.int(len(builds)),
        "steps_cached": dg.MetadataValue.int(cached),
        "steps_total": dg.MetadataValue.int(total),
        "cache_hit_ratio": dg.MetadataValue.float(round(cached / total, 3) if total else 0.0),
        "seconds": dg.MetadataValue.float(round(seconds, 3)),
        "stack_refs": dg.MetadataValue.md(table + rows if builds else "no stacks"),
    }


def build_prewarm_op(platform: Platform) -> dg.OpDefinition:
    """The op that prewarms every stack one platform's manifests use."""

    @dg.op(
        name=f"prewarm_{platform.slug}",
        description=f"Build and push the stable prefix of every stack on {platform.name}.",
        pool=platform.pool,
        tags={**k8s_op_tags(platform), "factory/platform": platform.name},
        retry_policy=prewarm_retry_policy(),
    )
    def prewarm_platform(
        context: dg.OpExecutionContext,
        manifest_store: ManifestStore,
        docker_builder: DockerBuilder,
        registry: Registry,
    ) -> dg.Output:
        if platform.gpu and not docker_builder.gpu_available():
            context.log.info(f"{platform.name}: no GPU executor here (no NVIDIA runtime): skipped")
            return dg.Output([], metadata={"platform": platform.name, "skipped": "no GPU executor"})
        started = time.monotonic()
        try:
            builds = prewarm(
                manifest_store.load(),
                engine=docker_builder.engine(),
                registry=registry.address,
                platforms=[platform],
                echo=context.log.info,
            )
        except FactoryError as exc:
            raise dg.Failure(
                description=f"prewarm on {platform.name} failed: {exc}",
                metadata={"platform": platform.name},
            ) from exc
        return dg.Output(
            [dataclasses.asdict(b) for b in builds],
            metadata=_metadata(platform, builds, time.monotonic() - started),
        )

    return prewarm_platform


PREWARM_OPS = [build_prewarm_op(p) for p in PLATFORMS]


@dg.job(
    name="prewarm_job",
    description=(
        "Push each stack's base + security + core layers to its per-arch cache ref, so a new "
        "executor's first build of any manifest on that stack starts from cache."
    ),
    tags={"factory/job": "prewarm"},
)
def prewarm_job():
    for op in PREWARM_OPS:
        op()


prewarm_schedule = operator_schedule(
    prewarm_job,
    PREWARM_CRON,
    "Prewarm the stack cache refs once a day (stopped until an operator starts it).",
)
