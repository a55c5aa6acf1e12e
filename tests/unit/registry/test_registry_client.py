"""The registry client's pure parts: names, platforms, index JSON, and how it reports no answer."""

import json
import socket

import pytest

from factory.errors import ServiceError
from factory.registry.client import RegistryClient
from factory.registry.manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    build_index,
    format_platform,
    index_platforms,
    parse_platform,
)
from factory.registry.names import is_loopback, split_image, split_reference

AMD64 = Descriptor(digest="sha256:" + "a" * 64, media_type=DOCKER_MANIFEST, size=427)
ARM64 = Descriptor(digest="sha256:" + "b" * 64, media_type=DOCKER_MANIFEST, size=426)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("127.0.0.1:5000/factory/base/busybox", ("127.0.0.1:5000", "factory/base/busybox")),
        ("localhost/x", ("localhost", "x")),
        ("registry.example.com/team/app", ("registry.example.com", "team/app")),
        ("[::1]:5000/factory/app", ("[::1]:5000", "factory/app")),
    ],
)
def test_split_image(image, expected):
    assert split_image(image) == expected


@pytest.mark.parametrize(
    "image",
    ["busybox", "library/busybox", "127.0.0.1:5000", "127.0.0.1:5000/", "h:1/app:tag", "h:1/a@x"],
)
def test_split_image_refuses_names_without_registry_or_with_tag(image):
    with pytest.raises(ValueError, match=r"image"):
        split_image(image)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (
            "127.0.0.1:5000/factory/app:linux_amd64-0123",
            ("127.0.0.1:5000", "factory/app", "linux_amd64-0123"),
        ),
        (
            "127.0.0.1:5000/factory/base/busybox@sha256:" + "c" * 64,
            ("127.0.0.1:5000", "factory/base/busybox", "sha256:" + "c" * 64),
        ),
    ],
)
def test_split_reference(ref, expected):
    assert split_reference(ref) == expected


def test_split_reference_needs_tag_or_digest():
    with pytest.raises(ValueError, match="neither a tag nor a digest"):
        split_reference("127.0.0.1:5000/factory/app")


@pytest.mark.parametrize(
    ("spelled", "normalized"),
    [
        ("linux/amd64", ("linux", "amd64", "")),
        ("linux/arm64", ("linux", "arm64", "v8")),
        ("linux/arm64/v8", ("linux", "arm64", "v8")),
        ("linux/arm/v7", ("linux", "arm", "v7")),
    ],
)
def test_parse_platform_normalizes_arm64_variant(spelled, normalized):
    assert parse_platform(spelled) == normalized
    assert parse_platform(format_platform(*normalized)) == normalized


@pytest.mark.parametrize("spelled", ["linux", "linux/", "linux/amd64/v1/x", "/amd64"])
def test_parse_platform_refuses_malformed(spelled):
    with pytest.raises(ValueError, match="OS/ARCH"):
        parse_platform(spelled)


def test_format_platform_leaves_out_implied_arm64_variant():
    assert format_platform("linux", "arm64", "v8") == "linux/arm64"
    assert format_platform("linux", "arm", "v7") == "linux/arm/v7"


def test_build_index_of_docker_manifests_is_a_docker_manifest_list():
    body = build_index([(AMD64, "linux/amd64"), (ARM64, "linux/arm64")])
    index = json.loads(body)
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == DOCKER_MANIFEST_LIST
    assert index["manifests"] == [
        {
            "mediaType": DOCKER_MANIFEST,
            "size": 427,
            "digest": AMD64.digest,
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        {
            "mediaType": DOCKER_MANIFEST,
            "size": 426,
            "digest": ARM64.digest,
            "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
        },
    ]


def test_build_index_with_an_oci_manifest_is_an_oci_index():
    oci = Descriptor(digest=ARM64.digest, media_type=OCI_MANIFEST, size=500)
    index = json.loads(build_index([(AMD64, "linux/amd64"), (oci, "linux/arm64")]))
    assert index["mediaType"] == OCI_INDEX


def test_build_index_is_deterministic_and_round_trips():
    entries = [(AMD64, "linux/amd64"), (ARM64, "linux/arm64/v8")]
    body = build_index(entries)
    assert body == build_index(entries)
    assert index_platforms(body) == {"linux/amd64": AMD64.digest, "linux/arm64": ARM64.digest}


@pytest.mark.parametrize(
    ("entries", "media_type", "message"),
    [
        ([], None, "at least one"),
        ([(AMD64, "linux/amd64"), (ARM64, "linux/amd64")], None, "listed twice"),
        ([(ARM64, "linux/arm64"), (AMD64, "linux/arm64/v8")], None, "listed twice"),
        ([(AMD64, "linux/amd64")], DOCKER_MANIFEST, "not an index media type"),
    ],
)
def test_build_index_refuses(entries, media_type, message):
    with pytest.raises(ValueError, match=message):
        build_index(entries, media_type=media_type)


def test_index_platforms_skips_attestation_entries():
    def entry(n, **platform):
        return {
            "mediaType": OCI_MANIFEST,
            "size": 100 + n,
            "digest": "sha256:" + str(n) * 64,
            **({"platform": platform} if platform else {}),
        }

    body = json.dumps(
        {
            "manifests": [
                entry(1, os="linux", architecture="amd64"),
                entry(2, os="unknown", architecture="unknown"),
                entry(3),
            ]
        }
    ).encode()
    assert index_platforms(body) == {"linux/amd64": "sha256:" + "1" * 64}


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.0.0.2", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("10.0.0.5:5000", False),
        ("registry.example.com", False),
    ],
)
def test_is_loopback(address, loopback):
    assert is_loopback(address) is loopback


@pytest.mark.parametrize(
    ("address", "base_url"),
    [
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("registry.example.com", "https://registry.example.com"),
        ("http://10.0.0.5:5000/", "http://10.0.0.5:5000"),
        ("https://127.0.0.1:5443", "https://127.0.0.1:5443"),
    ],
)
def test_scheme_is_http_on_loopback_unless_given(address, base_url):
    assert RegistryClient(address).base_url == base_url


def test_a_registry_that_does_not_answer_is_a_service_error_saying_what_to_do():
    # A port nobody listens on: bind one, learn its number, close it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = RegistryClient(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(ServiceError, match=rf"127\.0\.0\.1:{port} does not answer.*services up"):
        client.ping()
    with pytest.raises(ServiceError):
        client.head_digest("factory/app", "latest")


def test_delete_manifest_needs_a_digest():
    with pytest.raises(ValueError, match="needs a digest"):
        RegistryClient("127.0.0.1:5000").delete_manifest("factory/app", "latest")
