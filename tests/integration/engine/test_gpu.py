"""The GPU platform on real engines: its test containers ask for every GPU, and its builds take the
amd64 stable layers from the amd64 stack cache ref.

No GPU is needed: the container is created and inspected, never started (without an NVIDIA
runtime the start would fail), and the build needs no GPU at all.
"""

import shutil
import tempfile
import uuid

import docker
import pytest

from factory.build.buildlog import run_steps
from factory.build.engine import Engine
from factory.build.pipeline import Services, build_image, prepare, suite_environment
from factory.build.prewarm import distinct_stacks, prewarm, stack_cache_ref
from factory.platforms import BY_NAME
from factory.records.store import LocalRecordStore
from factory.registry.client import RegistryClient
from factory.registry.names import split_reference
from factory.services.embedded import docker_host
from factory.services.extra_engine import extra_engine
from factory.store.load import load_store
from tests.integration.stores import EXAMPLE, example_store_copy, manifest

pytestmark = pytest.mark.integration

GPU = BY_NAME["linux/amd64+gpu"]
AMD64 = BY_NAME["linux/amd64"]


@pytest.mark.parametrize("platform", [GPU, AMD64], ids=["gpu", "amd64"])
def test_test_containers_of_the_gpu_platform_request_every_gpu(services, tmp_path, platform):
    engine = Engine(docker_host(services))
    base = f"{services.registry}/factory/base/busybox"
    engine.client.images.pull(base, tag="1.35", platform="linux/amd64")
    script = tmp_path / "smoke.sh"
    script.write_text('#!/bin/sh\ntest "$FACTORY_GPU" = 1\n')
    container = engine.create_test_container(
        image_ref=f"{base}:1.35",
        oci_platform=platform.oci_platform,
        suite="smoke",
        script_path=script,
        environment=suite_environment("gpu-test", platform),
        gpu=platform.gpu,
    )
    try:
        container.reload()
        assert container.status == "created"  # never started
        requests = container.attrs["HostConfig"]["DeviceRequests"]
        env = container.attrs["Config"]["Env"]
        if platform.gpu:
            # All devices: count -1 and no device ids, with the `gpu` capability.
            [request] = requests
            assert (request["Count"], request["Capabilities"]) == (-1, [["gpu"]])
            assert not request["DeviceIDs"] and request["Driver"] == ""
            assert "FACTORY_GPU=1" in env
        else:
            assert not requests
            assert not any(e.startswith("FACTORY_GPU=") for e in env)
        # The rest of the lock-down holds for GPU containers too.
        host = container.attrs["HostConfig"]
        assert host["NetworkMode"] == "none" and host["CapDrop"] == ["ALL"]
        assert f"FACTORY_PLATFORM={platform.name}" in env
    finally:
        container.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        engine.client.containers.get(container.id)


def delete_repository(client: RegistryClient, repository: str) -> None:
    for tag in client.list_tags(repository):
        digest = client.head_digest(repository, tag)
        if digest:
            client.delete_manifest(repository, digest)


def test_gpu_build_on_a_fresh_engine_takes_the_stable_steps_from_the_amd64_stack_ref(
    services, tmp_path
):
    # A core fragment with a unique comment: a stack no earlier run has pushed.
    core = (EXAMPLE / "modules/core/0.1.0.Dockerfile").read_text()
    manifest_id = f"gpu-{uuid.uuid4().hex[:8]}"
    path = example_store_copy(
        tmp_path,
        {manifest_id: manifest(platforms=["linux/amd64", "linux/amd64+gpu"])},
        files={"modules/core/0.1.0.Dockerfile": f"# gpu test {uuid.uuid4().hex}\n" + core},
    )
    store = load_store(path)
    [stack] = distinct_stacks(store)
    client = RegistryClient(services.registry)
    amd64_ref = stack_cache_ref(services.registry, stack.key, AMD64)
    gpu_ref = stack_cache_ref(services.registry, stack.key, GPU)
    tmp = tempfile.mkdtemp(prefix="fx-")
    try:
        with extra_engine(tmp) as first, extra_engine(tmp) as fresh:
            # An amd64 executor prewarms the amd64 stack; no GPU stack ref exists.
            [warm] = prewarm(
                store, engine=Engine(first), registry=services.registry, platforms=[AMD64]
            )
            assert (warm.cache_ref, warm.run_steps, warm.run_cached) == (amd64_ref, 2, 0)
            _, repository, tag = split_reference(gpu_ref)
            assert client.head_digest(repository, tag) is None

            # A fresh GPU executor builds the GPU variant (the build needs no GPU).
            services_ = Services(
                engine=Engine(fresh),
                records=LocalRecordStore(tmp_path / "data"),
                work_dir=tmp_path / "work",
                registry=services.registry,
                gpu_available=True,
            )
            state = prepare(store, manifest_id, GPU, services=services_)
            assert state.extra_cache_refs == (amd64_ref,)
            built = build_image(state, services_)
            log = next(text for stage, text in built.logs if stage == "build")
            steps = run_steps(log)
            assert len(steps) == 3, log  # security, core, then the GPU variant's own layer
            assert [s.cached for s in steps] == [True, True, False], log
            assert built.image and built.image["rebuilt"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for repo in (
            f"factory/{manifest_id}",
            f"factory/{manifest_id}-cache",
            f"factory/stack-{stack.key}-cache",
        ):
            delete_repository(client, repo)
