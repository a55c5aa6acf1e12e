"""The asset factory: one chain per platform, dockerfile -> image -> test_report -> sbom -> record.

Each chain is partitioned by its platform's manifest ids and carries its pool and Kubernetes
placement, so a run from the UI, a backfill, a sensor or the CLI queues in the right pool. The
steps pass a `BuildState` through the IO manager; a failing step records the failure (evidence,
error file, immutable record) and then fails with a message naming manifest, platform and stage.
"""

import os
from collections.abc import Callable
from typing import NoReturn

import dagster as dg

from factory.errors import FactoryError, NoExecutorError, ServiceError
from factory.keys import BUILD_RECIPE_VERSION
from factory.pipeline import (
    BuildState,
    Services,
    StateError,
    build_image,
    make_sbom,
    prepare,
    record_failure,
    record_success,
    run_tests,
)
from factory.platforms import Platform
from factory_assets.inputs import inputs_key
from factory_assets.partitions import PARTITIONS
from factory_assets.platforms import k8s_op_tags
from factory_assets.queue_metrics import build_metadata
from resources import DockerBuilder, ManifestStore, RecordStore, Registry


class ImageConfig(dg.Config):
    """Rebuild even when the registry already holds an image for this build key."""

    force_rebuild: bool = False


def _services(
    docker_builder: DockerBuilder, registry: Registry, record_store: RecordStore, *, gpu: bool
) -> Services:
    return Services(
        engine=docker_builder.engine(),
        records=record_store.open(),
        work_dir=record_store.work_dir,
        registry=registry.address,
        gpu_available=docker_builder.gpu_available() if gpu else False,
    )


def _retry_delay_s() -> float:
    return float(os.environ.get("FACTORY_RETRY_DELAY_S", "2"))


def default_retry_policy() -> dg.RetryPolicy:
    """Transient trouble (engine or registry not answering, push/pull timeouts) is retried with
    exponential backoff and jitter; a failing test or a broken Dockerfile is a result, not retried
    (those failures raise with allow_retries=False)."""
    return dg.RetryPolicy(
        max_retries=3,
        delay=_retry_delay_s(),
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


def _retry_transient(
    context: dg.AssetExecutionContext, policy: dg.RetryPolicy, what: str, error: Exception
) -> None:
    """Ask for another attempt while the policy has some left; return on the last attempt."""
    if context.retry_number < policy.max_retries:
        attempt = context.retry_number + 1
        raise dg.Failure(
            description=(
                f"{what}: transient failure on attempt {attempt} of {policy.max_retries + 1}, "
                f"retrying: {error}"
            ),
            allow_retries=True,
        )


def _fail(
    context: dg.AssetExecutionContext,
    err: StateError,
    services: Services,
    policy: dg.RetryPolicy,
) -> NoReturn:
    state, error = err.state, err.error
    if error.transient:
        _retry_transient(context, policy, state.label(), error)
    # Only the final attempt is recorded: one record per build attempt that finished.
    record, uri = record_failure(
        state,
        error,
        services,
        partition=context.partition_key,
        attempts=context.retry_number + 1,
        run_id=context.run_id,
    )
    raise dg.Failure(
        description=(
            f"{state.manifest_id} on {state.platform}: stage {error.stage} failed "
            f"(record {record.build_id}, status {record.status}): {error}"
        ),
        metadata={
            "status": record.status,
            "stage": error.stage,
            "build_id": record.build_id,
            "record": dg.MetadataValue.path(uri),
            "error": dg.MetadataValue.path(services.records.uri("error", record.build_id)),
            "log_tail": dg.MetadataValue.md(f"```\n{error.log_tail[-4000:]}\n```"),
            "attempts": context.retry_number + 1,
        },
        allow_retries=False,
    )


def _run_stage(
    context: dg.AssetExecutionContext,
    state: BuildState,
    stage: Callable[[BuildState, Services], BuildState],
    resources: tuple[DockerBuilder, Registry, RecordStore],
    policy: dg.RetryPolicy,
) -> BuildState:
    """Run one stage on the upstream state; a failure is recorded, then fails the step."""
    _check_same_partition(context, state)
    services = _services(*resources, gpu=False)
    try:
        return stage(state, services)
    except StateError as err:
        _fail(context, err, services, policy)


def _check_same_partition(context: dg.AssetExecutionContext, state: BuildState) -> None:
    if state.manifest_id != context.partition_key:
        msg = (
            f"upstream state is for {state.manifest_id}, not partition {context.partition_key}; "
            "materialize the whole chain"
        )
        raise dg.Failure(description=msg)


def build_platform_chain(
    platform: Platform, retry_policy: dg.RetryPolicy | None = None
) -> list[dg.AssetsDefinition]:
    """The five assets of one platform's chain."""
    policy = retry_policy or default_retry_policy()
    slug = platform.slug
    common = {
        "partitions_def": PARTITIONS[slug],
        "group_name": slug,
        "key_prefix": [slug],
        "pool": platform.pool,
        "op_tags": k8s_op_tags(platform),
        "kinds": {"docker"},
        # A new build recipe changes every key: the UI shows every partition stale until rebuilt.
        "code_version": BUILD_RECIPE_VERSION,
        "retry_policy": policy,
    }

    def upstream(name: str) -> dict:
        return {"state": dg.AssetIn(key=dg.AssetKey([slug, name]))}

    @dg.asset(
        name="dockerfile",
        description=f"The Dockerfile rendered for {platform.name}.",
        deps=[inputs_key(platform)],
        **common,
    )
    def dockerfile(
        context: dg.AssetExecutionContext,
        manifest_store: ManifestStore,
        docker_builder: DockerBuilder,
        registry: Registry,
        record_store: RecordStore,
    ) -> dg.Output:
        what = f"{context.partition_key} on {platform.name}"
        try:
            services = _services(docker_builder, registry, record_store, gpu=platform.gpu)
            store = manifest_store.load()
            state = prepare(
                store, context.partition_key, platform, services=services, run_id=context.run_id
            )
        except StateError as err:
            _fail(context, err, services, policy)
        except ServiceError as exc:
            # The engine or the registry does not answer: retry; nothing was built to record.
            _retry_transient(context, policy, what, exc)
            raise dg.Failure(description=f"{what}: {exc}", allow_retries=False) from exc
        except (NoExecutorError, FactoryError, KeyError) as exc:
            # Nothing was built: no record, but a message that says what to do.
            raise dg.Failure(description=f"{what}: {exc}", allow_retries=False) from exc
        context.log.info(f"build {state.build_id}: {state.image_ref}")
        return dg.Output(
            state,
            metadata={
                "build_id": state.build_id,
                "build_key": state.build_key,
                "record_key": state.record_key,
                "base_digest": state.inputs["base"]["digest"],
                "render_s": state.timings_s["render"],
                "dockerfile": dg.MetadataValue.md(f"```dockerfile\n{state.dockerfile}\n```"),
            },
        )

    @dg.asset(
        name="image",
        ins=upstream("dockerfile"),
        description=f"The image built with BuildKit for {platform.name} and pushed.",
        **common,
    )
    def image(
        context: dg.AssetExecutionContext,
        config: ImageConfig,
        state: BuildState,
        docker_builder: DockerBuilder,
        registry: Registry,
        record_store: RecordStore,
    ) -> dg.Output:
        state = _run_stage(
            context,
            state,
            lambda s, services: build_image(s, services, force_rebuild=config.force_rebuild),
            (docker_builder, registry, record_store),
            policy,
        )
        assert state.image is not None
        return dg.Output(
            state,
            metadata={
                "image": state.image["ref"],
                "image_digest": state.image["digest"],
                "rebuilt": state.image["rebuilt"],
                "build_s": state.timings_s["build"],
                "steps": state.cache["steps"],
                "cached_steps": state.cache["cached"],
                "size_bytes": state.image["size_bytes"],
                "layers": state.image["layers"],
            },
        )

    @dg.asset(
        name="test_report",
        ins=upstream("image"),
        description=f"The image's test suites run in containers on {platform.name}.",
        **common,
    )
    def test_report(
        context: dg.AssetExecutionContext,
        state: BuildState,
        docker_builder: DockerBuilder,
        registry: Registry,
        record_store: RecordStore,
    ) -> dg.Output:
        state = _run_stage(
            context, state, run_tests, (docker_builder, registry, record_store), policy
        )
        return dg.Output(
            state,
            metadata={
                "status": "pass",
                "test_s": state.timings_s["test"],
                "suites": dg.MetadataValue.md(
                    "\n".join(
                        f"- {t['suite']}: {t['status']} ({t['duration_s']}s)" for t in state.tests
                    )
                    or "no suites"
                ),
            },
        )

    @dg.asset(
        name="sbom",
        ins=upstream("test_report"),
        description=f"The CycloneDX SBOM of the {platform.name} image.",
        **common,
    )
    def sbom(
        context: dg.AssetExecutionContext,
        state: BuildState,
        docker_builder: DockerBuilder,
        registry: Registry,
        record_store: RecordStore,
    ) -> dg.Output:
        state = _run_stage(
            context, state, make_sbom, (docker_builder, registry, record_store), policy
        )
        return dg.Output(
            state,
            metadata={
                "sbom": dg.MetadataValue.path(state.evidence["sbom"]["uri"]),
                "sbom_sha256": state.evidence["sbom"]["sha256"],
                "sbom_s": state.timings_s["sbom"],
            },
        )

    @dg.asset(
        name="compatibility_record",
        ins=upstream("sbom"),
        description=f"The immutable compatibility record for {platform.name}.",
        **common,
    )
    def compatibility_record(
        context: dg.AssetExecutionContext,
        state: BuildState,
        docker_builder: DockerBuilder,
        registry: Registry,
        record_store: RecordStore,
    ) -> dg.Output:
        _check_same_partition(context, state)
        services = Services(
            engine=docker_builder.engine(),
            records=record_store.open(),
            work_dir=record_store.work_dir,
            registry=registry.address,
        )
        try:
            record, uri = record_success(
                state, services, partition=context.partition_key, run_id=context.run_id
            )
        except FactoryError as exc:
            raise dg.Failure(description=f"{state.label()}: stage record failed: {exc}") from exc
        image_info = record.image
        assert image_info is not None
        return dg.Output(
            record.model_dump(mode="json"),
            metadata={
                **build_metadata(record),
                # Always present (the contract's figures); `cache_hit_ratio` is only there when
                # BuildKit really built, so a reused image does not plot as a perfect cache hit.
                "build_s": float(record.timings_s.get("build", 0.0)),
                "rebuilt": bool(image_info.rebuilt),
                "size_bytes": image_info.size_bytes or 0,
                "layers": image_info.layers or 0,
                "status": record.status,
                "build_id": record.build_id,
                "image_digest": image_info.digest or "",
                "steps": record.cache.steps,
                "cached_steps": record.cache.cached,
                "record": dg.MetadataValue.path(uri),
                "evidence": dg.MetadataValue.path(record.evidence["log"].uri),
            },
        )

    return [dockerfile, image, test_report, sbom, compatibility_record]
