"""`verify_build` against the real registry: a re-pushed tag is caught.

The test pushes its own tiny images with the docker CLI (`docker import` of a one-file tarball: no
base image, no build) into a throwaway repository named as Factory names images, writes a matching
record in a tmp LocalRecordStore, and never reads or writes `.factory/records`.
"""

import os
import subprocess
import uuid

import pytest

from factory.platforms import platform as lookup_platform
from factory.records.store import LocalRecordStore
from factory.registry.client import RegistryClient
from factory.registry.names import split_reference
from factory.services.embedded import DOCKER_CLI, docker_host
from factory.store.keys import image_ref
from factory.supply_chain.verify import verify_build
from tests.integration.registry.docker_images import delete_repository, docker, import_tiny
from tests.unit.supply_chain.test_verify import write_build

pytestmark = pytest.mark.integration

TIMEOUT_S = 120


def push_tiny_image(env: dict, ref: str, content: str, image_ids: list) -> str:
    """Import a one-file image, push it to `ref`; return the digest the registry reported.

    The local image id goes into `image_ids`, so the teardown can remove images that a later
    push left untagged.
    """
    image_ids.append(import_tiny(env, ref, content))
    docker(env, "push", ref)
    repo_digests = docker(
        env, "image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}", ref
    )
    repository = ref.rsplit(":", 1)[0]
    digests = [
        line.split("@", 1)[1] for line in repo_digests.split() if line.startswith(repository + "@")
    ]
    assert len(digests) == 1, repo_digests
    return digests[0]


@pytest.fixture
def pushed(services, tmp_path):
    """A Factory-style ref in a throwaway repository; its manifests and local images go after."""
    env = {**os.environ, "DOCKER_HOST": docker_host(services)}
    manifest_id = f"verify-test-{uuid.uuid4().hex[:8]}"
    build_key = uuid.uuid4().hex + uuid.uuid4().hex
    ref = image_ref(services.registry, manifest_id, lookup_platform("linux/amd64"), build_key)
    image_ids: list[str] = []
    yield env, manifest_id, build_key, ref, image_ids
    address, repository, _ = split_reference(ref)
    delete_repository(RegistryClient(address), repository)
    subprocess.run(
        [DOCKER_CLI, "image", "rm", "--force", *image_ids],
        env=env,
        capture_output=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def write_record(
    store: LocalRecordStore, *, manifest_id: str, build_key: str, ref: str, digest: str
) -> str:
    """A passing record with its log, SBOM and provenance, for the image pushed at `ref`."""
    return write_build(
        store,
        ref=ref,
        manifest_id=manifest_id,
        platform="linux/amd64",
        build_key=build_key,
        record_digest=digest,
        sbom_digest=digest,
        provenance_digest=digest,
    )


def test_verify_passes_then_catches_a_tag_pushed_over(pushed, tmp_path):
    env, manifest_id, build_key, ref, image_ids = pushed
    digest = push_tiny_image(env, ref, "first image\n", image_ids)
    store = LocalRecordStore(tmp_path / "stores")
    build_id = write_record(
        store, manifest_id=manifest_id, build_key=build_key, ref=ref, digest=digest
    )

    report = verify_build(build_id, store)
    assert report.ok, "\n".join(report.lines())
    registry = next(c for c in report.checks if c.name == "registry")
    assert not registry.skipped
    assert digest in registry.detail

    other = push_tiny_image(env, ref, "a different image under the same tag\n", image_ids)
    assert other != digest
    report = verify_build(build_id, store)
    assert not report.ok
    assert [c.name for c in report.failed] == ["registry"]
    assert other in report.failed[0].detail

    # Without the registry, the stored evidence alone still verifies.
    assert verify_build(build_id, store, registry_check=False).ok
