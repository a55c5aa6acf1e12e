"""Two Docker Engines, one registry: a fresh executor gets the stable layers from the cache ref.

One engine builds an example combination through the pipeline (image and per-arch cache ref
pushed); then an extra, empty engine builds the same Dockerfile with `--cache-from` that ref.
Its local cache is empty, so every CACHED step there came from the registry.

The first test's producer is an extra engine of its own too. With the project's engine as the
producer the test depends on what earlier tests left in that engine's build cache: in the whole
suite's order (after about forty other integration tests) the fresh engine got no step from the
cache ref, while alone, and after any of the suspected tests alone, it gets all of them. That
history-dependent case is not explained yet (docs/performance.md, "Known open question").
"""

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from factory.build.buildlog import cache_imports, run_steps
from factory.build.engine import Engine
from factory.build.pipeline import BuildState, Services, build_image, prepare
from factory.platforms import platform as lookup_platform
from factory.records.store import LocalRecordStore
from factory.registry.client import RegistryClient
from factory.registry.names import split_reference
from factory.services.embedded import docker_host
from factory.services.extra_engine import extra_engine
from factory.store.load import load_store

pytestmark = pytest.mark.integration

MANIFEST_ID = "llm_factory"  # the example manifest on both arches


def _empty_engine() -> Iterator[str]:
    """DOCKER_HOST of an extra dockerd with an empty data root, stopped afterwards."""
    # Not tmp_path: unix socket paths under pytest's folders get too long.
    tmp = tempfile.mkdtemp(prefix="fx-")
    try:
        with extra_engine(tmp) as host:
            yield host
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def fresh_engine() -> Iterator[str]:
    """The engine that builds second, from the registry cache."""
    yield from _empty_engine()


def built_on_main(settings, tmp_path, platform_name: str, *, host: str | None = None) -> BuildState:
    """Build and push one combination on the project's engine (or `host`), as a materialization
    would."""
    store = load_store(settings.manifest_store)
    services = Services(
        engine=Engine(host or docker_host(settings)),
        records=LocalRecordStore(tmp_path / "data"),
        work_dir=tmp_path / "work",
        registry=settings.registry,
    )
    state = prepare(store, MANIFEST_ID, lookup_platform(platform_name), services=services)
    # Rebuilt even when the registry has this build key's image: the cache ref must be pushed.
    return build_image(state, services, force_rebuild=True)


def build_on(host: str, state: BuildState, *, cache_ref: str | None = None):
    """Build the state's Dockerfile on another engine; nothing is pushed from there."""
    return Engine(host).build(
        dockerfile=state.dockerfile,
        image_ref=state.image_ref,
        cache_ref=cache_ref or state.cache_ref,
        oci_platform=state.platform_info.oci_platform,
    )


@pytest.fixture
def producer_engine() -> Iterator[str]:
    """The executor that builds and pushes first."""
    yield from _empty_engine()


def test_fresh_engine_gets_every_stable_layer_from_the_registry_cache(
    services, tmp_path, producer_engine, fresh_engine
):
    main = built_on_main(services, tmp_path, "linux/amd64", host=producer_engine)
    assert main.image and main.image["rebuilt"]

    result = build_on(fresh_engine, main)

    runs = run_steps(result.log)
    # security, core, light: one RUN each in the example fragments.
    assert len(runs) == 3
    uncached = [s.instruction for s in runs if not s.cached]
    producer_log = "\n".join(text for _, text in main.logs)
    assert uncached == [], f"producer:\n{producer_log}\nfresh engine:\n{result.log}"
    assert cache_imports(result.log) == [main.cache_ref]


def test_cache_refs_are_per_arch(services, tmp_path, fresh_engine):
    amd64 = built_on_main(services, tmp_path, "linux/amd64")
    arm64 = built_on_main(services, tmp_path, "linux/arm64")
    assert amd64.cache_ref != arm64.cache_ref
    assert amd64.cache_ref.endswith("-cache:linux_amd64")
    assert arm64.cache_ref.endswith("-cache:linux_arm64")

    # Each cache tag holds one image, of its own architecture.
    for state, oci_platform in ((amd64, "linux/amd64"), (arm64, "linux/arm64")):
        address, repository, tag = split_reference(state.cache_ref)
        assert list(RegistryClient(address).platforms(repository, tag)) == [oci_platform]

    # The arm64 build on an empty engine imports the arm64 ref only, and every RUN step hits it.
    result = build_on(fresh_engine, arm64)
    assert cache_imports(result.log) == [arm64.cache_ref]
    assert amd64.cache_ref not in result.log
    runs = run_steps(result.log)
    assert runs and all(s.cached for s in runs)


def test_an_arch_never_hits_another_arch_cache(services, tmp_path, fresh_engine):
    """Offered the amd64 ref, an arm64 build gets nothing from it: sharing a ref across arches
    would only overwrite one arch's cache with the other's, never save a build step."""
    amd64 = built_on_main(services, tmp_path, "linux/amd64")
    arm64 = prepare(
        load_store(services.manifest_store),
        MANIFEST_ID,
        lookup_platform("linux/arm64"),
        services=Services(
            engine=Engine(fresh_engine),
            records=LocalRecordStore(tmp_path / "data"),
            work_dir=tmp_path / "work",
            registry=services.registry,
        ),
    )

    result = build_on(fresh_engine, arm64, cache_ref=amd64.cache_ref)

    assert cache_imports(result.log) == [amd64.cache_ref]
    runs = run_steps(result.log)
    assert len(runs) == 3 and not any(s.cached for s in runs)
