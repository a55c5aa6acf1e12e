"""The offline base image's pure parts: a reproducible root filesystem and image for it."""

import gzip
import io
import json
import tarfile

import pytest

from factory.registry.manifests import DOCKER_MANIFEST
from factory.registry.names import sha256_digest
from factory.services.base_images import assemble_image, busybox_layer

APPLETS = ["bin/sh", "bin/ls", "usr/bin/wget", "sbin/ifconfig", "bin/busybox"]


def _members(layer_tar: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer_tar)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_layer_holds_busybox_its_applet_links_accounts_and_tmp():
    members = _members(busybox_layer(b"\x7fELF fake", APPLETS, mtime=1_700_000_000))
    assert members["bin/busybox"].isfile()
    assert members["bin/busybox"].mode == 0o755
    for applet in ("bin/sh", "bin/ls", "usr/bin/wget", "sbin/ifconfig"):
        assert members[applet].issym()
        assert members[applet].linkname == "/bin/busybox"
    for folder in ("bin", "etc", "sbin", "usr", "usr/bin", "tmp", "root"):
        assert members[folder].isdir()
    assert members["tmp"].mode == 0o1777
    assert {m.uid for m in members.values()} == {0}
    assert {m.mtime for m in members.values()} == {1_700_000_000}


def test_layer_lists_parents_before_children():
    names = list(_members(busybox_layer(b"x", APPLETS, mtime=0)))
    assert names == sorted(names)


def test_same_inputs_give_the_same_image_bytes():
    def image():
        layer = busybox_layer(b"\x7fELF fake", APPLETS, mtime=1_700_000_000)
        return assemble_image(
            layer, oci_platform="linux/arm64", mtime=1_700_000_000, package_version="1:1.35.0-4"
        )

    first, second = image(), image()
    assert (first.layer, first.config, first.manifest) == (
        second.layer,
        second.config,
        second.manifest,
    )
    assert first.digest == sha256_digest(first.manifest)


@pytest.mark.parametrize(
    ("oci_platform", "arch", "variant"),
    [("linux/amd64", "amd64", None), ("linux/arm64", "arm64", "v8")],
)
def test_image_config_and_manifest_describe_the_layer(oci_platform, arch, variant):
    layer_tar = busybox_layer(b"bb", APPLETS, mtime=86_400)
    image = assemble_image(layer_tar, oci_platform=oci_platform, mtime=86_400, package_version="1")
    config = json.loads(image.config)
    manifest = json.loads(image.manifest)
    assert (config["os"], config["architecture"], config.get("variant")) == ("linux", arch, variant)
    assert config["created"] == "1970-01-02T00:00:00Z"
    assert config["rootfs"]["diff_ids"] == [sha256_digest(layer_tar)]
    assert gzip.decompress(image.layer) == layer_tar
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["digest"] == sha256_digest(image.config)
    assert manifest["layers"][0]["digest"] == sha256_digest(image.layer)
    assert manifest["layers"][0]["size"] == len(image.layer)
