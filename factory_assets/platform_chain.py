"""The asset factory: one step per combination materializes a platform's whole chain.

A platform's chain is five assets, `dockerfile -> image -> test_report -> sbom ->
compatibility_record`, so the UI, the CLI, the sensors and the docs keep naming each stage. They
are one non-subsettable multi-asset: one process (one pod, one Celery task) per combination. The
stages hand the `BuildState` to each other in memory; no output goes through an IO manager, so a
step never needs a disk another step wrote, and the image is tested on the engine that built it.

Each asset is materialized as its stage finishes, with that stage's metadata. A failing stage
writes its record (evidence, error file, immutable record) and fails the step, so the assets after
it are not materialized. Transient trouble (an engine or registry that does not answer) retries the
whole step with backoff; a retry re-renders, and reuses an image a previous attempt pushed for the
same build key, so it costs little. Only the final attempt writes a record.
"""

from collections.abc import Callable, Iterator
from typing import NoReturn

import dagster as dg

from factory.build.executor_identity import current_identity
from factory.build.pipeline import (
    BuildState,
    Services,
    StateError,
    build_image,
    make_sbom,
    prepare,
    run_tests,
)
from factory.build.recording import record_failure, record_success
from factory.build.step_guard import die_with_parent
from factory.env_numbers import env_float
from factory.errors import FactoryError, NoExecutorError, ServiceError
from factory.platforms import Platform
from factory.store.keys import BUILD_RECIPE_VERSION
from factory_assets.alerts import alert_after_record
from factory_assets.inputs import inputs_key
from factory_assets.partitions import PARTITIONS
from factory_assets.platforms import chain_op_tags
from factory_assets.queue_metrics import build_metadata
from resources import DockerBuilder, ManifestStore, RecordStore, Registry

# The chain's assets in stage order, each with the record stage it stands for and what it is.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("dockerfile", "render", "The Dockerfile rendered for {platform}."),
    ("image", "build", "The image built with BuildKit for {platform} and pushed."),
    ("test_report", "test", "The image's test suites run in containers on {platform}."),
    ("sbom", "sbom", "The CycloneDX SBOM of the {platform} image."),
    ("compatibility_record", "record", "The immutable compatibility record for {platform}."),
)
ASSET_NAMES = tuple(name for name, _, _ in STAGES)
STAGE_OF_ASSET = {name: stage for name, stage, _ in STAGES}


def chain_step_name(platform: Platform) -> str:
    """The op (and step key) that materializes one combination of `platform`'s chain."""
    return f"{platform.slug}__chain"


class ChainConfig(dg.Config):
    """Rebuild even when the registry already holds an image for this build key."""

    force_rebuild: bool = False


def retry_delay_s() -> float:
    """The first delay before a step is tried again, in seconds (FACTORY_RETRY_DELAY_S)."""
    return env_float(
        "FACTORY_RETRY_DELAY_S", 2.0, low=0, high=3600, what="a retry delay in seconds"
    )


def default_retry_policy() -> dg.RetryPolicy:
    """Transient trouble (engine or registry not answering, push/pull timeouts) is retried with
    exponential backoff and jitter; a failing test or a broken Dockerfile is a result, not retried
    (those failures raise with allow_retries=False)."""
    return dg.RetryPolicy(
        max_retries=3,
        delay=retry_delay_s(),
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


def _retry_transient(
    context: dg.AssetExecutionContext,
    policy: dg.RetryPolicy,
    what: str,
    stage: str,
    error: Exception,
) -> None:
    """Ask for another attempt while the policy has some left; return on the last attempt."""
    if context.retry_number < policy.max_retries:
        attempt = context.retry_number + 1
        raise dg.Failure(
            description=(
                f"{what}: stage {stage}: transient failure on attempt {attempt} of "
                f"{policy.max_retries + 1}, retrying: {error}"
            ),
            metadata={"stage": stage, "attempts": attempt},
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
        _retry_transient(context, policy, state.label(), error.stage, error)
    # Only the final attempt is recorded: one record per build attempt that finished.
    record, uri = record_failure(
        state,
        error,
        services,
        partition=context.partition_key,
        attempts=context.retry_number + 1,
        run_id=context.run_id,
    )
    alert_after_record(context, record, services.records)
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


def _services(
    platform: Platform,
    docker_builder: DockerBuilder,
    registry: Registry,
    record_store: RecordStore,
) -> Services:
    engine = docker_builder.engine()
    return Services(
        engine=engine,
        records=record_store.open(),
        work_dir=record_store.work_dir,
        registry=registry.address,
        gpu_available=docker_builder.gpu_available() if platform.gpu else False,
        executor=current_identity(
            pool=platform.pool, docker_host=engine.docker_host, engine_id=engine.engine_id()
        ),
    )


def _start(
    context: dg.AssetExecutionContext,
    platform: Platform,
    policy: dg.RetryPolicy,
    resources: tuple[ManifestStore, DockerBuilder, Registry, RecordStore],
) -> tuple[BuildState, Services]:
    """Open the services and render (stage `render`); failures before a state exists have nothing
    to record and fail the step with a message that says what to do."""
    manifest_store, docker_builder, registry, record_store = resources
    # A lost run worker must not leave this step running to write a second record.
    die_with_parent()
    what = f"{context.partition_key} on {platform.name}"
    services = None
    try:
        services = _services(platform, docker_builder, registry, record_store)
        store = manifest_store.load()
        state = prepare(
            store, context.partition_key, platform, services=services, run_id=context.run_id
        )
    except StateError as err:
        assert services is not None
        _fail(context, err, services, policy)
    except ServiceError as exc:
        # The engine or the registry does not answer: retry; nothing was built to record.
        _retry_transient(context, policy, what, "render", exc)
        raise dg.Failure(
            description=f"{what}: {exc}", metadata={"stage": "render"}, allow_retries=False
        ) from exc
    except (NoExecutorError, FactoryError, KeyError) as exc:
        raise dg.Failure(
            description=f"{what}: {exc}", metadata={"stage": "render"}, allow_retries=False
        ) from exc
    context.log.info(
        f"build {state.build_id}: {state.image_ref} by {services.executor.describe()}"
        if services.executor
        else f"build {state.build_id}: {state.image_ref}"
    )
    return state, services


def _run_stage(
    context: dg.AssetExecutionContext,
    state: BuildState,
    stage: Callable[[BuildState, Services], BuildState],
    services: Services,
    policy: dg.RetryPolicy,
) -> BuildState:
    """Run one stage on the state so far; a failure is recorded, then fails the step."""
    try:
        return stage(state, services)
    except StateError as err:
        _fail(context, err, services, policy)


def _dockerfile_metadata(state: BuildState) -> dict:
    return {
        "build_id": state.build_id,
        "build_key": state.build_key,
        "record_key": state.record_key,
        "base_digest": state.inputs["base"]["digest"],
        "render_s": state.timings_s["render"],
        "dockerfile": dg.MetadataValue.md(f"```dockerfile\n{state.dockerfile}\n```"),
    }


def _image_metadata(state: BuildState) -> dict:
    assert state.image is not None
    return {
        "image": state.image["ref"],
        "image_digest": state.image["digest"],
        "rebuilt": state.image["rebuilt"],
        "build_s": state.timings_s["build"],
        "steps": state.cache["steps"],
        "cached_steps": state.cache["cached"],
        "size_bytes": state.image["size_bytes"],
        "layers": state.image["layers"],
    }


def _test_metadata(state: BuildState) -> dict:
    return {
        "status": "pass",
        "test_s": state.timings_s["test"],
        "suites": dg.MetadataValue.md(
            "\n".join(f"- {t['suite']}: {t['status']} ({t['duration_s']}s)" for t in state.tests)
            or "no suites"
        ),
    }


def _sbom_metadata(state: BuildState) -> dict:
    return {
        "sbom": dg.MetadataValue.path(state.evidence["sbom"]["uri"]),
        "sbom_sha256": state.evidence["sbom"]["sha256"],
        "sbom_s": state.timings_s["sbom"],
    }


def _record_metadata(record, uri: str) -> dict:
    image_info = record.image
    assert image_info is not None
    executor = record.executor
    return {
        **build_metadata(record),
        # Always present (the contract's figures); `cache_hit_ratio` is only there when BuildKit
        # really built, so a reused image does not plot as a perfect cache hit.
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
        **(
            {"worker": executor.worker, "host": executor.host, "engine": executor.docker_host}
            if executor
            else {}
        ),
    }


def _specs(platform: Platform) -> list[dg.AssetSpec]:
    slug = platform.slug
    specs = []
    upstream: dg.AssetKey = inputs_key(platform)
    for name, _, description in STAGES:
        key = dg.AssetKey([slug, name])
        specs.append(
            dg.AssetSpec(
                key=key,
                deps=[upstream],
                description=description.format(platform=platform.name),
                group_name=slug,
                kinds={"docker"},
                # A new build recipe changes every key: the UI shows every partition stale.
                code_version=BUILD_RECIPE_VERSION,
            )
        )
        upstream = key
    return specs


def build_platform_chain(
    platform: Platform, retry_policy: dg.RetryPolicy | None = None
) -> list[dg.AssetsDefinition]:
    """One platform's chain: its five assets, materialized by one step per partition."""
    policy = retry_policy or default_retry_policy()

    @dg.multi_asset(
        name=chain_step_name(platform),
        specs=_specs(platform),
        partitions_def=PARTITIONS[platform.slug],
        can_subset=False,
        pool=platform.pool,
        op_tags=chain_op_tags(platform),
        retry_policy=policy,
        description=(
            f"Render, build, test, SBOM and record one manifest on {platform.name}, in one step."
        ),
    )
    def chain(
        context: dg.AssetExecutionContext,
        config: ChainConfig,
        manifest_store: ManifestStore,
        docker_builder: DockerBuilder,
        registry: Registry,
        record_store: RecordStore,
    ) -> Iterator[dg.MaterializeResult]:
        state, services = _start(
            context, platform, policy, (manifest_store, docker_builder, registry, record_store)
        )
        slug = platform.slug
        yield dg.MaterializeResult(
            asset_key=[slug, "dockerfile"], metadata=_dockerfile_metadata(state)
        )

        def build(s: BuildState, svc: Services) -> BuildState:
            return build_image(s, svc, force_rebuild=config.force_rebuild)

        state = _run_stage(context, state, build, services, policy)
        yield dg.MaterializeResult(asset_key=[slug, "image"], metadata=_image_metadata(state))
        state = _run_stage(context, state, run_tests, services, policy)
        yield dg.MaterializeResult(asset_key=[slug, "test_report"], metadata=_test_metadata(state))
        state = _run_stage(context, state, make_sbom, services, policy)
        yield dg.MaterializeResult(asset_key=[slug, "sbom"], metadata=_sbom_metadata(state))
        try:
            record, uri = record_success(
                state, services, partition=context.partition_key, run_id=context.run_id
            )
        except FactoryError as exc:
            raise dg.Failure(
                description=f"{state.label()}: stage record failed: {exc}",
                metadata={"stage": "record"},
            ) from exc
        alert_after_record(context, record, services.records, manifest_store.load)
        yield dg.MaterializeResult(
            asset_key=[slug, "compatibility_record"], metadata=_record_metadata(record, uri)
        )

    return [chain]
