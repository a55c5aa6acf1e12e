"""One combination's build, stage by stage: render, build (or reuse), test, SBOM.

One Dagster step per combination calls these functions in turn and hands the `BuildState` from
one to the next in memory (no IO manager, no shared disk between processes); the functions
themselves know nothing of Dagster, so the same code runs from tests and tools. A stage that fails
raises a `StateError` carrying the state so far; the step then records it with
`factory.build.recording.record_failure`, and a combination whose stages all pass with
`record_success`.
"""

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from factory.build.engine import Engine
from factory.build.executor_identity import ExecutorIdentity
from factory.build.prewarm import gpu_cache_refs, stack_cache_ref_for
from factory.errors import NoExecutorError, RegistryError, ServiceError, StageError
from factory.platforms import Platform
from factory.platforms import platform as lookup_platform
from factory.records.model import log_tail, new_build_id, utc_now
from factory.records.store import RecordStore
from factory.registry.client import RegistryClient
from factory.registry.names import split_image
from factory.store.keys import build_key, cache_ref, combination_inputs, image_ref, record_key
from factory.store.load import LoadedStore
from factory.store.manifest import secret_env_name
from factory.store.render import render_dockerfile
from factory.supply_chain import sbom as sbom_module
from factory.supply_chain.quarantine import quarantine_ref, quarantined_digest


class StateError(Exception):
    """A stage failed after the state existed: carries both so the caller can record it."""

    def __init__(self, state: "BuildState", error: StageError):
        super().__init__(str(error))
        self.state = state
        self.error = error


@dataclass
class BuildState:
    """Everything one build attempt has learned so far, handed from stage to stage."""

    build_id: str
    manifest_id: str
    platform: str
    pool: str
    build_key: str
    record_key: str
    inputs: dict
    image_ref: str
    cache_ref: str
    dockerfile: str
    started_at: str
    run_id: str | None = None
    suites: dict[str, str] = field(default_factory=dict)  # suite name -> script text
    suite_timeouts: dict[str, int] = field(default_factory=dict)
    suite_read_only: dict[str, bool] = field(default_factory=dict)
    secret_ids: list[str] = field(default_factory=list)  # ids only: values never enter the state
    stack_cache_ref: str | None = None  # the prewarmed base+security+core prefix, if any
    # GPU variants also import the amd64 stack ref: same base and stable layers as amd64.
    extra_cache_refs: tuple[str, ...] = ()
    from_quarantine: bool = False  # a re-test of an image that failed before
    logs: list[tuple[str, str]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    image: dict | None = None
    cache: dict = field(default_factory=lambda: {"steps": 0, "cached": 0})
    tests: list[dict] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)

    @property
    def platform_info(self) -> Platform:
        return lookup_platform(self.platform)

    def label(self) -> str:
        return f"{self.manifest_id} on {self.platform}"

    def log(self, stage: str, text: str) -> None:
        self.logs.append((stage, text))


@dataclass(frozen=True)
class Services:
    """The real parts a build talks to."""

    engine: Engine
    records: RecordStore
    work_dir: Path  # where test scripts are staged for bind mounts into test containers
    registry: str  # where images and cache refs are pushed, e.g. 127.0.0.1:5000
    gpu_available: bool = False
    executor: ExecutorIdentity | None = None  # named in the record and its evidence


def build_secrets(state: "BuildState") -> dict[str, str]:
    """The manifest's build secrets, read from the environment just before the build."""
    missing = [secret_env_name(s) for s in state.secret_ids if secret_env_name(s) not in os.environ]
    if missing:
        msg = (
            f"{state.label()} needs build secrets that are not set: {', '.join(missing)} "
            "(set them in the environment of the process that runs the build)"
        )
        raise StageError(msg, stage="build")
    return {s: os.environ[secret_env_name(s)] for s in state.secret_ids}


def as_stage_error(exc: Exception, stage: str) -> StageError:
    """A stage's failure as a StageError; an engine or registry that does not answer is transient
    (worth a retry), a registry that answers nonsense is not."""
    if isinstance(exc, StageError):
        return exc
    return StageError(str(exc), stage=stage, transient=isinstance(exc, ServiceError))


def base_digest(store: LoadedStore, manifest_id: str, platform: Platform) -> str:
    """The base image's digest for this platform (not its multi-arch index digest)."""
    base = store.model.bases[store.manifest(manifest_id).base]
    address, repository = split_image(base.image)
    return RegistryClient(address).platform_digest(repository, base.tag, platform.oci_platform)


def prepare(
    store: LoadedStore,
    manifest_id: str,
    platform: Platform,
    *,
    services: Services,
    run_id: str | None = None,
    base_digests: dict[tuple[str, str], str] | None = None,
) -> BuildState:
    """Resolve the base, compute the keys and render the Dockerfile (stage `render`)."""
    if platform.gpu and not services.gpu_available:
        msg = (
            f"{manifest_id} on {platform.name} needs a GPU executor: the Docker Engine at "
            f"{services.engine.docker_host} has no NVIDIA runtime. Run it on the `gpu` pool "
            "(see docs/deploy.md) or on a host with nvidia-container-runtime."
        )
        raise NoExecutorError(msg)
    started = time.monotonic()
    manifest = store.manifest(manifest_id)
    key = (manifest.base, platform.oci_platform)
    digest = (base_digests or {}).get(key) or base_digest(store, manifest_id, platform)
    inputs = combination_inputs(store, manifest_id, platform, digest)
    bkey = build_key(inputs)
    state = BuildState(
        build_id=new_build_id(),
        manifest_id=manifest_id,
        platform=platform.name,
        pool=platform.pool,
        build_key=bkey,
        record_key=record_key(inputs, bkey),
        inputs=inputs.as_record(),
        image_ref=image_ref(services.registry, manifest_id, platform, bkey),
        cache_ref=cache_ref(services.registry, manifest_id, platform),
        dockerfile="",
        started_at=utc_now(),
        run_id=run_id,
        suites={s: store.suite_file(s).text for s in manifest.tests},
        suite_timeouts={s: store.model.test_suites[s].timeout_s for s in manifest.tests},
        suite_read_only={s: store.model.test_suites[s].read_only_root for s in manifest.tests},
        secret_ids=list(manifest.build_secrets),
        stack_cache_ref=stack_cache_ref_for(store, manifest_id, platform, services.registry),
        extra_cache_refs=gpu_cache_refs(store, manifest_id, platform, services.registry),
    )
    try:
        rendered = render_dockerfile(store, inputs, bkey)
    except StageError as exc:
        state.timings_s["render"] = time.monotonic() - started
        raise StateError(state, exc) from exc
    state.dockerfile = rendered.text
    state.timings_s["render"] = round(time.monotonic() - started, 3)
    state.log("render", rendered.text)
    return state


def build_image(
    state: BuildState, services: Services, *, force_rebuild: bool = False
) -> BuildState:
    """Build and push the image, or reuse the one the registry already has for this build key."""
    state = dataclasses.replace(state, logs=list(state.logs), timings_s=dict(state.timings_s))
    platform = state.platform_info
    address, rest = split_image(state.image_ref.rsplit(":", 1)[0])
    tag = state.image_ref.rsplit(":", 1)[1]
    started = time.monotonic()
    try:
        existing = None if force_rebuild else RegistryClient(address).head_digest(rest, tag)
        held = None if force_rebuild or existing else quarantined_digest(state.image_ref)
        if held:
            # Tested before and failed: re-test that image rather than build it again.
            note = services.engine.ensure_local(
                image_ref=quarantine_ref(state.image_ref),
                digest=held,
                oci_platform=platform.oci_platform,
            )
            services.engine.retag(quarantine_ref(state.image_ref), state.image_ref)
            state.log(
                "build", f"reused quarantined {quarantine_ref(state.image_ref)}@{held}\n{note}"
            )
            digest, rebuilt, state.from_quarantine = held, False, True
            state.cache = {"steps": 0, "cached": 0}
        elif existing:
            note = services.engine.ensure_local(
                image_ref=state.image_ref, digest=existing, oci_platform=platform.oci_platform
            )
            state.log("build", f"reused {state.image_ref}@{existing}: same build key\n{note}")
            digest, rebuilt = existing, False
            state.cache = {"steps": 0, "cached": 0}
        else:
            result = services.engine.build(
                dockerfile=state.dockerfile,
                image_ref=state.image_ref,
                cache_ref=state.cache_ref,
                oci_platform=platform.oci_platform,
                secrets=build_secrets(state),
                extra_cache_from=(
                    *((state.stack_cache_ref,) if state.stack_cache_ref else ()),
                    *state.extra_cache_refs,
                ),
            )
            state.log("build", result.log)
            digest, push_log = services.engine.push(state.image_ref)
            _, cache_log = services.engine.push(state.cache_ref)
            state.log("push", push_log + cache_log)
            state.cache = {"steps": result.steps, "cached": result.cached}
            rebuilt = True
        facts = services.engine.image_facts(state.image_ref, digest)
    except (StageError, ServiceError, RegistryError) as exc:
        error = as_stage_error(exc, "build")
        state.timings_s["build"] = round(time.monotonic() - started, 3)
        if error.log_tail:
            state.log(error.stage, error.log_tail)
        raise StateError(state, error) from exc
    state.timings_s["build"] = round(time.monotonic() - started, 3)
    state.image = {
        "ref": state.image_ref,
        "digest": digest,
        "size_bytes": facts.size_bytes,
        "layers": facts.layers,
        "rebuilt": rebuilt,
    }
    return state


def suite_environment(manifest_id: str, platform: Platform) -> dict[str, str]:
    """What a test suite sees; GPU platforms also get FACTORY_GPU=1 (and every GPU)."""
    return {
        "FACTORY_MANIFEST_ID": manifest_id,
        "FACTORY_PLATFORM": platform.name,
        **({"FACTORY_GPU": "1"} if platform.gpu else {}),
    }


def run_tests(state: BuildState, services: Services) -> BuildState:
    """Run every suite; a failing or timed-out suite makes the combination `fail`."""
    state = dataclasses.replace(state, logs=list(state.logs), timings_s=dict(state.timings_s))
    staged = services.work_dir / state.build_id / "tests"
    staged.mkdir(parents=True, exist_ok=True)
    platform = state.platform_info
    started = time.monotonic()
    results = []
    try:
        for suite, text in state.suites.items():
            script = staged / f"{suite}.sh"
            script.write_text(text)
            script.chmod(0o444)
            run = services.engine.run_suite(
                image_ref=state.image_ref,
                oci_platform=platform.oci_platform,
                suite=suite,
                script_path=script,
                timeout_s=state.suite_timeouts[suite],
                read_only_root=state.suite_read_only.get(suite, True),
                environment=suite_environment(state.manifest_id, platform),
                gpu=platform.gpu,
                run_id=state.run_id,
            )
            results.append(run)
            verdict = "timed out" if run.timed_out else f"exit {run.exit_code}"
            state.log(f"test {suite}", f"[{verdict}, {run.duration_s:.2f}s]\n{run.output}")
    except (StageError, ServiceError) as exc:
        state.timings_s["test"] = round(time.monotonic() - started, 3)
        raise StateError(state, as_stage_error(exc, "test")) from exc
    state.timings_s["test"] = round(time.monotonic() - started, 3)
    state.tests = [
        {
            "suite": r.suite,
            "status": "pass" if r.passed else "fail",
            "exit_code": r.exit_code,
            "duration_s": round(r.duration_s, 3),
            "timed_out": r.timed_out,
        }
        for r in results
    ]
    failed = [r for r in results if not r.passed]
    if failed:
        names = ", ".join(
            f"{r.suite} ({'timed out' if r.timed_out else f'exit {r.exit_code}'})" for r in failed
        )
        tail = "\n".join(log_tail(r.output, 20) for r in failed)
        error = StageError(
            f"test suite(s) failed for {state.label()}: {names}",
            stage="test",
            status="fail",
            log_tail=tail,
        )
        raise StateError(state, error)
    return state


def make_sbom(state: BuildState, services: Services) -> BuildState:
    """Write the CycloneDX SBOM of what the image holds, with the image digest as its subject."""
    state = dataclasses.replace(
        state, logs=list(state.logs), timings_s=dict(state.timings_s), evidence=dict(state.evidence)
    )
    assert state.image is not None
    try:
        subject = sbom_module.SbomSubject(
            image_ref=state.image_ref,
            image_digest=state.image["digest"],
            platform=state.platform,
            manifest_id=state.manifest_id,
            build_id=state.build_id,
        )
        bom, seconds = sbom_module.image_sbom(services.engine.client, subject)
        uri, sha = services.records.put_json("sbom", state.build_id, bom)
    except (StageError, ServiceError) as exc:
        raise StateError(state, as_stage_error(exc, "sbom")) from exc
    state.timings_s["sbom"] = round(seconds, 3)
    components = bom.get("components") or []
    state.evidence["sbom"] = {"uri": uri, "sha256": sha}
    state.log(
        "sbom",
        f"{len(components)} components: "
        + ", ".join(f"{c.get('name')}@{c.get('version')}" for c in components)
        + "\n",
    )
    return state
