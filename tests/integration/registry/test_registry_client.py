"""The registry client against the real local registry: push, index, resolve, list, delete."""

import uuid

import pytest

from factory.errors import RegistryError
from factory.registry.client import RegistryClient
from factory.registry.manifests import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST
from factory.services.embedded import assemble_image, busybox_layer

pytestmark = pytest.mark.integration


@pytest.fixture
def pushed(services):
    """A throwaway repository with one tiny image per platform; its manifests are deleted after."""
    client = RegistryClient(services.registry)
    repository = f"factory/test/registry-client-{uuid.uuid4().hex[:8]}"
    digests = {}
    for oci_platform in ("linux/amd64", "linux/arm64"):
        layer = busybox_layer(oci_platform.encode(), ["bin/sh"], mtime=0)
        image = assemble_image(layer, oci_platform=oci_platform, mtime=0, package_version="0")
        client.push_blob(repository, image.layer)
        client.push_blob(repository, image.config)
        tag = oci_platform.replace("/", "_")
        digests[oci_platform] = client.put_manifest(
            repository, tag, DOCKER_MANIFEST, image.manifest
        )
    yield client, repository, digests
    for tag in client.list_tags(repository):
        digest = client.head_digest(repository, tag)
        if digest:
            client.delete_manifest(repository, digest)


def test_index_of_two_platforms_resolves_each(pushed):
    client, repository, digests = pushed
    entries = [(digests["linux/amd64"], "linux/amd64"), (digests["linux/arm64"], "linux/arm64")]
    index = client.put_index(repository, "multi", entries)

    assert client.head_digest(repository, "multi") == index
    media_type, digest, body = client.get_manifest(repository, "multi")
    assert b'"variant": "v8"' in body
    assert (media_type, digest) == (DOCKER_MANIFEST_LIST, index)
    assert client.platforms(repository, "multi") == digests
    for oci_platform, image_digest in digests.items():
        assert client.platform_digest(repository, "multi", oci_platform) == image_digest


def test_single_image_platform_comes_from_its_config(pushed):
    client, repository, digests = pushed
    assert (
        client.platform_digest(repository, "linux_arm64", "linux/arm64") == digests["linux/arm64"]
    )
    with pytest.raises(RegistryError, match=r"has no linux/amd64 image \(it has: linux/arm64\)"):
        client.platform_digest(repository, "linux_arm64", "linux/amd64")


def test_missing_platform_in_an_index_names_what_it_has(pushed):
    client, repository, digests = pushed
    client.put_index(repository, "amd64-only", [(digests["linux/amd64"], "linux/amd64")])
    with pytest.raises(RegistryError, match=rf"{repository}:amd64-only has no linux/arm64 image"):
        client.platform_digest(repository, "amd64-only", "linux/arm64")


def test_index_entries_must_exist(pushed):
    client, repository, _ = pushed
    with pytest.raises(RegistryError, match="does not exist: push each platform's image"):
        client.put_index(repository, "broken", [("sha256:" + "0" * 64, "linux/amd64")])


def test_tags_and_delete(pushed):
    client, repository, digests = pushed
    assert client.list_tags(repository) == ["linux_amd64", "linux_arm64"]
    client.delete_manifest(repository, digests["linux/amd64"])
    client.delete_manifest(repository, digests["linux/amd64"])  # already gone: not an error
    assert client.head_digest(repository, "linux_amd64") is None
    assert client.list_tags(repository) == ["linux_arm64"]
    with pytest.raises(RegistryError, match=r"does not exist.*tags: linux_arm64"):
        client.get_manifest(repository, "linux_amd64")


def test_unknown_repository_has_no_tags(services):
    client = RegistryClient(services.registry)
    assert client.list_tags(f"factory/test/none-{uuid.uuid4().hex[:8]}") == []
