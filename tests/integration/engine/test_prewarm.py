"""Prewarm on real engines: a new executor's prewarm starts from the stack cache ref.

The store copy gets a core fragment with a unique comment: the stack key (content hash) is new, so
no stack ref exists yet, while the layers themselves are the example's.
"""

import shutil
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from factory.build.engine import Engine
from factory.build.prewarm import distinct_stacks, prewarm
from factory.platforms import BY_NAME, PLATFORMS
from factory.registry.client import RegistryClient
from factory.registry.names import split_reference
from factory.services.extra_engine import extra_engine
from factory.store.load import load_store
from factory_assets.prewarm import prewarm_job
from resources import DockerBuilder, ManifestStore, Registry
from tests.integration.stores import EXAMPLE, example_store_copy

pytestmark = pytest.mark.integration


@pytest.fixture
def engines() -> Iterator[tuple[str, str]]:
    """Two extra dockerds with empty data roots: two executors that never built anything."""
    tmp = tempfile.mkdtemp(prefix="fx-")
    try:
        with extra_engine(tmp) as first, extra_engine(tmp) as second:
            yield first, second
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fresh_stack_store(tmp_path):
    core = (EXAMPLE / "modules/core/0.1.0.Dockerfile").read_text()
    marker = f"# prewarm test {uuid.uuid4().hex}\n"
    return example_store_copy(tmp_path, files={"modules/core/0.1.0.Dockerfile": marker + core})


def test_second_executor_prewarm_comes_from_the_stack_ref(services, tmp_path, engines):
    store = load_store(fresh_stack_store(tmp_path))
    platforms = [BY_NAME["linux/amd64"], BY_NAME["linux/arm64"]]
    first, second = engines

    cold = prewarm(store, engine=Engine(first), registry=services.registry, platforms=platforms)
    warm = prewarm(store, engine=Engine(second), registry=services.registry, platforms=platforms)

    assert [(b.platform, b.run_steps, b.run_cached) for b in cold] == [
        ("linux/amd64", 2, 0),
        ("linux/arm64", 2, 0),
    ]
    assert [(b.platform, b.run_steps, b.run_cached) for b in warm] == [
        ("linux/amd64", 2, 2),
        ("linux/arm64", 2, 2),
    ]
    # One ref per arch, each holding an image of its own arch.
    for build in warm:
        address, repository, tag = split_reference(build.cache_ref)
        assert tag == BY_NAME[build.platform].slug
        assert list(RegistryClient(address).platforms(repository, tag)) == [build.platform]


def test_prewarm_job_reports_stacks_and_skips_gpu_without_executor(services, tmp_path, engines):
    path = fresh_stack_store(tmp_path)
    [stack] = distinct_stacks(load_store(path))

    result = prewarm_job.execute_in_process(
        resources={
            "manifest_store": ManifestStore(path=str(path)),
            "docker_builder": DockerBuilder(docker_host=engines[0]),
            "registry": Registry(address=services.registry),
        },
    )

    assert result.success
    metadata = {
        event.step_key: event.event_specific_data.metadata
        for event in result.all_node_events
        if event.is_successful_output
    }
    assert set(metadata) == {f"prewarm_{p.slug}" for p in PLATFORMS}
    for slug in ("linux_amd64", "linux_arm64"):
        values = metadata[f"prewarm_{slug}"]
        assert values["stacks"].value == 1
        assert values["steps_total"].value == 2
        assert stack.key in values["stack_refs"].value
    assert metadata["prewarm_linux_amd64_gpu"]["skipped"].value == "no GPU executor"
