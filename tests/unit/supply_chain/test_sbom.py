"""SBOM: what a filesystem tar stream holds, and the CycloneDX document made of it.

The tar streams are built in memory (or lazily, for the huge-file case) exactly as `docker export`
writes them: one member after another, hard links pointing back at the first name of an inode.
The Docker SDK is faked at its boundary with the same method names and arguments.
"""

import copy
import io
import json
import random
import tarfile
import tracemalloc
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import docker.errors
import pytest
import requests.exceptions
from packageurl import PackageURL

from factory.errors import StageError
from factory.supply_chain.sbom import (
    SPEC_VERSION,
    Package,
    SbomSubject,
    build_sbom,
    image_repository,
    image_sbom,
    scan_filesystem,
    unique_packages,
    validate_sbom,
)

MiB = 1 << 20
DIGEST = "sha256:" + "ab" * 32
IMAGE_REF = "127.0.0.1:5000/factory/llm_factory:linux_amd64-0123456789ab"
WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
SUBJECT = SbomSubject(
    image_ref=IMAGE_REF,
    image_digest=DIGEST,
    platform="linux/amd64",
    manifest_id="llm_factory",
    build_id="6f1c1f5e-6a55-4a3c-9d7e-0c2f8f5f4b11",
)


# ---------------------------------------------------------------------------------------------
# Building tar streams


@dataclass(frozen=True)
class Entry:
    """One tar member; `data` may be bytes or a Huge placeholder produced lazily."""

    name: str
    data: "bytes | Huge" = b""
    mode: int = 0o644
    type: bytes = tarfile.REGTYPE
    linkname: str = ""


@dataclass(frozen=True)
class Huge:
    """`size` bytes of zeros with `tail` at the end, never held in memory whole."""

    size: int
    tail: bytes = b""


def file(name: str, data: "bytes | Huge", mode: int = 0o644) -> Entry:
    return Entry(name, data, mode)


def executable(name: str, data: "bytes | Huge") -> Entry:
    return Entry(name, data, 0o755)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, type=tarfile.SYMTYPE, linkname=target, mode=0o777)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, type=tarfile.LNKTYPE, linkname=target, mode=0o755)


def directory(name: str) -> Entry:
    return Entry(name, type=tarfile.DIRTYPE, mode=0o755)


def tar_chunks(entries: Iterable[Entry]) -> Iterator[bytes]:
    """The archive as a stream of chunks; a Huge member's zeros come one reused MiB at a time."""
    for entry in entries:
        info = tarfile.TarInfo(entry.name)
        info.type, info.mode, info.linkname = entry.type, entry.mode, entry.linkname
        size = 0
        if entry.type == tarfile.REGTYPE:
            size = entry.data.size if isinstance(entry.data, Huge) else len(entry.data)
        info.size = size
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        if isinstance(entry.data, Huge):
            yield from _zeros(entry.data.size - len(entry.data.tail))
            yield entry.data.tail
        else:
            yield entry.data
        yield b"\0" * (-size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _zeros(size: int) -> Iterator[bytes]:
    block = bytes(MiB)
    for _ in range(size // MiB):
        yield block
    yield bytes(size % MiB)


def tar_stream(*entries: Entry) -> io.BytesIO:
    return io.BytesIO(b"".join(tar_chunks(entries)))


class ChunkStream(io.RawIOBase):
    """A readable file over an iterator of chunks, as a socket would deliver them."""

    def __init__(self, chunks: Iterator[bytes]):
        super().__init__()
        self._chunks, self._pending = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            self._pending = next(self._chunks, None)
            if self._pending is None:
                self._pending = b""
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


# ---------------------------------------------------------------------------------------------
# The synthetic image contents

BUSYBOX_BINARY = (
    b"\x7fELF\x02\x01\x01" + bytes(4096) + b"BusyBox v1.35.0 (Debian 1:1.35.0-4+b3) multi-call "
    b"binary.\x00Usage: busybox [function [arguments]...]\x00" + bytes(4096)
)

DPKG_STATUS = b"""\
Package: busybox
Status: install ok installed
Priority: optional
Section: utils
Installed-Size: 2000
Maintainer: Debian Install System Team <debian-boot@lists.debian.org>
Architecture: amd64
Version: 1:1.35.0-4+b3
Description: Tiny utilities for small and embedded systems
 BusyBox combines tiny versions of many common UNIX utilities into a single
 small executable.
 Package: not-a-package
 Version: 0.0

Package: libc6
Status: install ok installed
Architecture: arm64
Multi-Arch: same
Source: glibc (2.36-9+deb12u4)
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries

Package: removed-tool
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1
Description: was installed once, only its conffiles are left
"""

APK_INSTALLED = b"""\
C:Q1abcdefghijklmnopqrstuvwxyz0=
P:musl
V:1.2.4-r2
A:x86_64
S:383152
I:622592
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Teras <timo.teras@iki.fi>
F:lib
R:ld-musl-x86_64.so.1

P:ssl_client
V:1.36.1-r5
A:x86_64
T:EXternal ssl_client for busybox wget
o:busybox
"""

DIST_INFO_METADATA = (
    b"""\
Metadata-Version: 2.1
Name: Foo_Bar
Version: 1.2.3
Summary: a package with a long description
Description-Content-Type: text/markdown

Name: not-this-one
Version: 9.9.9
"""
    + b"x" * 100_000
)

EGG_INFO_PKG_INFO = b"""\
Metadata-Version: 1.1
Name: Legacy.Pkg
Version: 0.9
Summary: made by setuptools develop
"""

BUSYBOX_PURL = "pkg:generic/busybox@1.35.0"


def pkg(name, version, kind, purl, found_at, arch="", source="") -> Package:
    return Package(name, version, kind, purl, found_at, arch, source)


DEBIAN_IMAGE = (
    directory("bin"),
    executable("bin/busybox", BUSYBOX_BINARY),
    symlink("bin/sh", "busybox"),
    file("var/lib/dpkg/status", DPKG_STATUS),
    file("var/lib/dpkg/status-old", DPKG_STATUS),
    file("usr/lib/python3.11/site-packages/Foo_Bar-1.2.3.dist-info/METADATA", DIST_INFO_METADATA),
    file("usr/lib/python3.11/site-packages/Foo_Bar-1.2.3.dist-info/RECORD", b"foo_bar/x.py,,\n"),
    file("srv/app/legacy_pkg.egg-info/PKG-INFO", EGG_INFO_PKG_INFO),
)
DEBIAN_PACKAGES = [
    pkg("busybox", "1.35.0", "busybox", BUSYBOX_PURL, "/bin/busybox"),
    pkg(
        "busybox",
        "1:1.35.0-4+b3",
        "deb",
        "pkg:deb/debian/busybox@1:1.35.0-4%2Bb3?arch=amd64",
        "/var/lib/dpkg/status",
        "amd64",
        "busybox",
    ),
    pkg(
        "libc6",
        "2.36-9+deb12u4",
        "deb",
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=arm64",
        "/var/lib/dpkg/status",
        "arm64",
        "glibc",
    ),
    pkg(
        "Foo_Bar",
        "1.2.3",
        "pypi",
        "pkg:pypi/foo-bar@1.2.3",
        "/usr/lib/python3.11/site-packages/Foo_Bar-1.2.3.dist-info/METADATA",
    ),
    pkg(
        "Legacy.Pkg",
        "0.9",
        "pypi",
        "pkg:pypi/legacy-pkg@0.9",
        "/srv/app/legacy_pkg.egg-info/PKG-INFO",
    ),
]

# docker export writes busybox's inode under its first name in walk order; the rest link to it.
ALPINE_IMAGE = (
    executable("bin/[", BUSYBOX_BINARY),
    hardlink("bin/[[", "bin/["),
    hardlink("bin/busybox", "bin/["),
    hardlink("bin/sh", "bin/["),
    file("lib/apk/db/installed", APK_INSTALLED),
)
ALPINE_PACKAGES = [
    pkg(
        "musl",
        "1.2.4-r2",
        "apk",
        "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64",
        "/lib/apk/db/installed",
        "x86_64",
        "musl",
    ),
    pkg(
        "ssl_client",
        "1.36.1-r5",
        "apk",
        "pkg:apk/alpine/ssl_client@1.36.1-r5?arch=x86_64",
        "/lib/apk/db/installed",
        "x86_64",
        "busybox",
    ),
    pkg("busybox", "1.35.0", "busybox", BUSYBOX_PURL, "/bin/busybox"),
]

# merged /usr: `bin` is a link to `usr/bin`, so `/sbin/busybox -> /bin/[` resolves through it.
MERGED_USR_IMAGE = (
    symlink("bin", "usr/bin"),
    executable("./usr/bin/[", BUSYBOX_BINARY),
    symlink("sbin/busybox", "/bin/["),
    file("var/lib/dpkg/status.d/base-files", b"Package: base-files\nVersion: 12.4\n"),
    file("var/lib/dpkg/status.d/base-files.md5sums", b"0123 etc/issue\n"),
    file("usr/lib/python3/dist-packages/six-1.16.0.egg-info", b"Name: six\nVersion: 1.16.0\n"),
)
MERGED_USR_PACKAGES = [
    pkg("busybox", "1.35.0", "busybox", BUSYBOX_PURL, "/sbin/busybox"),
    pkg(
        "base-files",
        "12.4",
        "deb",
        "pkg:deb/debian/base-files@12.4",
        "/var/lib/dpkg/status.d/base-files",
        "",
        "base-files",
    ),
    pkg(
        "six",
        "1.16.0",
        "pypi",
        "pkg:pypi/six@1.16.0",
        "/usr/lib/python3/dist-packages/six-1.16.0.egg-info",
    ),
]

# Files that look like evidence but are not: each must be ignored.
DECOYS = (
    file("bin/busybox", BUSYBOX_BINARY),  # not executable
    executable("usr/local/bin/busybox", b"#!/bin/sh\necho not the real one\n"),  # no version
    executable("opt/tool/helper", BUSYBOX_BINARY),  # holds the string, but is named neither
    file("usr/share/doc/dpkg/status", DPKG_STATUS),  # a copy, not the database
    file("lib/apk/db/installed.bak", APK_INSTALLED),
    file("src/foo.dist-info/METADATA", DIST_INFO_METADATA),  # not inside a package directory
    file("usr/lib/python3.11/site-packages/x.dist-info/METADATA", b"Summary: no name\n"),
)


def sort_expected(packages: list[Package]) -> list[Package]:
    return sorted(packages, key=lambda p: (p.kind, p.name, p.version, p.purl))


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        pytest.param(DEBIAN_IMAGE, DEBIAN_PACKAGES, id="debian"),
        pytest.param(ALPINE_IMAGE, ALPINE_PACKAGES, id="alpine-hardlinks"),
        pytest.param(MERGED_USR_IMAGE, MERGED_USR_PACKAGES, id="merged-usr-distroless"),
        pytest.param(DECOYS, [], id="decoys"),
        pytest.param((), [], id="empty"),
    ],
)
def test_scan_finds_exactly_the_packages(entries, expected):
    assert scan_filesystem(tar_stream(*entries)) == sort_expected(expected)


def test_scan_reports_a_package_once_at_its_first_path():
    """Two installs of one distribution are one purl; the first path in sorted order wins."""
    metadata = b"Name: six\nVersion: 1.16.0\n\n"
    found = scan_filesystem(
        tar_stream(
            file("venv/lib/python3.11/site-packages/six-1.16.0.dist-info/METADATA", metadata),
            file("usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA", metadata),
        )
    )
    assert [(p.purl, p.found_at) for p in found] == [
        ("pkg:pypi/six@1.16.0", "/usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA")
    ]


@pytest.mark.parametrize("offset", [MiB - 40, MiB - 16, MiB - 5, MiB, MiB + 3])
def test_busybox_version_split_across_read_chunks(offset):
    """The version string is found whole wherever the 1 MiB read boundary cuts it."""
    binary = bytes(offset) + b"BusyBox v1.36.1 (2024-01-01 00:00:00 UTC)" + bytes(100)
    found = scan_filesystem(tar_stream(executable("bin/busybox", binary)))
    assert [p.purl for p in found] == ["pkg:generic/busybox@1.36.1"]


def test_scan_reads_a_chunked_stream_like_a_socket():
    chunks = (c[i : i + 7] for c in tar_chunks(DEBIAN_IMAGE) for i in range(0, len(c), 7))
    stream = io.BufferedReader(ChunkStream(chunks))
    assert scan_filesystem(stream) == sort_expected(DEBIAN_PACKAGES)


def test_huge_files_are_streamed_not_loaded():
    """Two 64 MiB files (one an executable scanned for a version) cost a few MiB of memory."""
    entries = (
        file("var/cache/blob.bin", Huge(64 * MiB)),
        executable("usr/bin/busybox", Huge(64 * MiB, tail=b"BusyBox v1.35.0 (x)\n")),
        file("var/lib/dpkg/status", DPKG_STATUS),
    )
    stream = io.BufferedReader(ChunkStream(tar_chunks(entries)))
    tracemalloc.start()
    try:
        found = scan_filesystem(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [p.purl for p in found] == [
        BUSYBOX_PURL,
        "pkg:deb/debian/busybox@1:1.35.0-4%2Bb3?arch=amd64",
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=arm64",
    ]
    assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB: the scan held a file in memory"


def test_scan_is_deterministic():
    assert scan_filesystem(tar_stream(*DEBIAN_IMAGE)) == scan_filesystem(tar_stream(*DEBIAN_IMAGE))


@pytest.mark.parametrize("package", DEBIAN_PACKAGES + ALPINE_PACKAGES + MERGED_USR_PACKAGES)
def test_purls_round_trip(package):
    """Every purl parses, and says the name and version the package carries."""
    parsed = PackageURL.from_string(package.purl)
    assert parsed.to_string() == package.purl
    assert parsed.version == package.version
    assert parsed.qualifiers == ({"arch": package.arch} if package.arch else {})


def test_unique_packages_ignores_input_order():
    packages = DEBIAN_PACKAGES + ALPINE_PACKAGES
    shuffled = random.Random(7).sample(packages, len(packages))
    assert unique_packages(shuffled) == unique_packages(packages)


# ---------------------------------------------------------------------------------------------
# The BOM


@pytest.fixture(scope="module")
def bom() -> dict:
    return build_sbom(DEBIAN_PACKAGES, SUBJECT, timestamp=WHEN)


def test_bom_is_valid_cyclonedx(bom):
    validate_sbom(bom)
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", SPEC_VERSION.to_version())


def test_bom_describes_the_image(bom):
    image = bom["metadata"]["component"]
    assert image["type"] == "container"
    assert image["name"] == "127.0.0.1:5000/factory/llm_factory"
    assert image["version"] == DIGEST
    purl = PackageURL.from_string(image["purl"])
    assert (purl.type, purl.name, purl.version) == ("oci", "llm_factory", DIGEST)
    assert purl.qualifiers == {
        "arch": "amd64",
        "repository_url": "127.0.0.1:5000/factory/llm_factory",
    }
    properties = {p["name"]: p["value"] for p in image["properties"]}
    assert properties == {
        "factory:image_ref": IMAGE_REF,
        "factory:platform": "linux/amd64",
        "factory:manifest_id": "llm_factory",
        "factory:build_id": SUBJECT.build_id,
    }


def test_bom_lists_the_packages_with_purls_and_where_they_were_found(bom):
    listed = {
        c["purl"]: (c["name"], c["version"], c["evidence"]["occurrences"][0]["location"])
        for c in bom["components"]
    }
    assert listed == {p.purl: (p.name, p.version, p.found_at) for p in DEBIAN_PACKAGES}
    assert all(c["bom-ref"] == c["purl"] for c in bom["components"])
    libc = next(c for c in bom["components"] if c["name"] == "libc6")
    assert {"name": "factory:source_package", "value": "glibc"} in libc["properties"]


def test_bom_image_depends_on_every_package(bom):
    image_ref = bom["metadata"]["component"]["bom-ref"]
    image_deps = next(d for d in bom["dependencies"] if d["ref"] == image_ref)
    assert sorted(image_deps["dependsOn"]) == sorted(p.purl for p in DEBIAN_PACKAGES)


def test_bom_names_factory_as_tool_and_derives_the_serial_from_the_build(bom):
    assert [t["name"] for t in bom["metadata"]["tools"]["components"]] == ["factory"]
    serial = uuid.UUID(bom["serialNumber"].removeprefix("urn:uuid:"))
    assert bom["serialNumber"] == serial.urn
    other = build_sbom(DEBIAN_PACKAGES, replace(SUBJECT, build_id="another"), timestamp=WHEN)
    assert other["serialNumber"] != bom["serialNumber"]
    assert datetime.fromisoformat(bom["metadata"]["timestamp"]) == WHEN


@pytest.mark.parametrize(
    "packages",
    [
        pytest.param(list(reversed(DEBIAN_PACKAGES)), id="reversed"),
        pytest.param(DEBIAN_PACKAGES + DEBIAN_PACKAGES, id="duplicated"),
    ],
)
def test_bom_is_byte_identical_for_the_same_build(bom, packages):
    again = build_sbom(packages, SUBJECT, timestamp=WHEN)
    assert json.dumps(again) == json.dumps(bom)


def test_bom_without_timestamp_differs_only_in_timestamp(bom):
    before = datetime.now(UTC) - timedelta(seconds=1)
    now_bom = build_sbom(DEBIAN_PACKAGES, SUBJECT)
    assert datetime.fromisoformat(now_bom["metadata"]["timestamp"]) >= before
    now_bom["metadata"]["timestamp"] = bom["metadata"]["timestamp"]
    assert json.dumps(now_bom) == json.dumps(bom)


def test_bom_of_an_image_without_packages_is_valid():
    empty = build_sbom([], replace(SUBJECT, platform="linux/arm64"), timestamp=WHEN)
    validate_sbom(empty)
    assert "components" not in empty or empty["components"] == []
    assert "arch=arm64" in empty["metadata"]["component"]["purl"]


@pytest.mark.parametrize(
    ("platform", "arch"),
    [("linux/amd64", "amd64"), ("linux/arm64", "arm64"), ("linux/amd64+gpu", "amd64")],
)
def test_image_purl_arch_follows_the_platform_table(platform, arch):
    made = build_sbom([], replace(SUBJECT, platform=platform), timestamp=WHEN)
    assert PackageURL.from_string(made["metadata"]["component"]["purl"]).qualifiers["arch"] == arch


@pytest.mark.parametrize(
    ("image_ref", "repository"),
    [
        (IMAGE_REF, "127.0.0.1:5000/factory/llm_factory"),
        ("127.0.0.1:5000/factory/llm_factory", "127.0.0.1:5000/factory/llm_factory"),
        (f"127.0.0.1:5000/factory/x:tag@{DIGEST}", "127.0.0.1:5000/factory/x"),
        (f"registry.local/x@{DIGEST}", "registry.local/x"),
        ("busybox:1.35", "busybox"),
    ],
)
def test_image_repository(image_ref, repository):
    assert image_repository(image_ref) == repository


@pytest.mark.parametrize(
    ("changes", "timestamp", "message"),
    [
        ({"image_digest": "latest"}, WHEN, "not `algorithm:hex`"),
        ({"platform": "linux/s390x"}, WHEN, "unknown platform"),
        ({}, datetime(2025, 1, 1), "timezone-aware"),
    ],
)
def test_build_sbom_rejects_bad_input(changes, timestamp, message):
    with pytest.raises(ValueError, match=message):
        build_sbom([], replace(SUBJECT, **changes), timestamp=timestamp)


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("components", 0, "type"), "banana", "'banana' is not one of"),
        (("serialNumber",), "12345", "does not match"),
        (("metadata", "component", "unexpected"), True, "'unexpected' was unexpected"),
    ],
)
def test_validate_sbom_rejects_invalid_documents(bom, path, value, reason):
    """The validator's own message is passed on, so the broken field can be found."""
    broken = copy.deepcopy(bom)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=r"not valid CycloneDX 1\.6") as raised:
        validate_sbom(broken)
    assert reason in str(raised.value)


# ---------------------------------------------------------------------------------------------
# image_sbom through a fake Docker SDK client


class FakeContainer:
    """`docker.models.containers.Container`'s export/remove, fed from prepared chunks."""

    id = "c0ffee"

    def __init__(self, chunks: Iterable[bytes], *, export_error=None, remove_error=None):
        self._chunks = list(chunks)
        self._export_error, self._remove_error = export_error, remove_error
        self.removed = False
        self.export_closed = False

    def export(self, chunk_size=None):
        def stream():
            try:
                yield from self._chunks
                if self._export_error:
                    raise self._export_error
            finally:
                self.export_closed = True

        return stream()

    def remove(self, force=False):
        if self._remove_error:
            raise self._remove_error
        self.removed = force


class FakeContainers:
    def __init__(self, container=None, create_error=None):
        self.container, self.create_error = container, create_error
        self.created: list[tuple[str, dict]] = []

    def create(self, image, command=None, **kwargs):
        self.created.append((image, {"command": command, **kwargs}))
        if self.create_error:
            raise self.create_error
        return self.container


class FakeDockerClient:
    def __init__(self, containers: FakeContainers):
        self.containers = containers


def client_for(container=None, create_error=None) -> FakeDockerClient:
    return FakeDockerClient(FakeContainers(container, create_error))


def sbom_of(client, platform="linux/amd64+gpu"):
    return image_sbom(client, replace(SUBJECT, platform=platform), timestamp=WHEN)


def test_image_sbom_scans_a_created_container_and_removes_it():
    chunks = [c[i : i + 4096] for c in tar_chunks(ALPINE_IMAGE) for i in range(0, len(c), 4096)]
    container = FakeContainer(chunks)
    client = client_for(container)
    made, seconds = sbom_of(client)
    validate_sbom(made)
    assert {c["purl"] for c in made["components"]} == {p.purl for p in ALPINE_PACKAGES}
    assert made == build_sbom(
        ALPINE_PACKAGES, replace(SUBJECT, platform="linux/amd64+gpu"), timestamp=WHEN
    )
    assert seconds >= 0
    [(image, kwargs)] = client.containers.created
    assert image == IMAGE_REF
    assert kwargs["platform"] == "linux/amd64"  # the engine's platform, not the manifest's
    assert container.removed
    assert container.export_closed


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (docker.errors.ImageNotFound("No such image"), False),
        (requests.exceptions.ConnectionError("engine went away"), True),
    ],
)
def test_image_sbom_reports_a_container_that_cannot_be_created(error, transient):
    with pytest.raises(StageError, match="could not create a container") as raised:
        sbom_of(client_for(create_error=error))
    assert raised.value.stage == "sbom"
    assert raised.value.transient is transient
    assert IMAGE_REF in str(raised.value)
    assert raised.value.__cause__ is error


@pytest.mark.parametrize(
    "container",
    [
        pytest.param(FakeContainer([b"not a tar archive" * 64]), id="garbage"),
        pytest.param(FakeContainer([]), id="empty-stream"),
        pytest.param(
            FakeContainer(
                list(tar_chunks(DEBIAN_IMAGE))[:3],
                export_error=docker.errors.APIError("export interrupted"),
            ),
            id="interrupted",
        ),
    ],
)
def test_image_sbom_removes_the_container_when_the_scan_fails(container):
    with pytest.raises(StageError, match="could not read the filesystem") as raised:
        sbom_of(client_for(container))
    assert raised.value.stage == "sbom"
    assert IMAGE_REF in str(raised.value)
    assert container.removed


def test_image_sbom_notes_a_failed_cleanup_on_the_scan_error():
    container = FakeContainer([b"junk" * 256], remove_error=docker.errors.APIError("busy"))
    with pytest.raises(StageError, match="could not read the filesystem") as raised:
        sbom_of(client_for(container))
    assert any("docker rm -f c0ffee" in note for note in raised.value.__notes__)


def test_image_sbom_reports_a_container_left_behind():
    container = FakeContainer(
        list(tar_chunks(ALPINE_IMAGE)), remove_error=docker.errors.APIError("x")
    )
    with pytest.raises(StageError, match="could not remove") as raised:
        sbom_of(client_for(container))
    assert raised.value.transient
    assert IMAGE_REF in str(raised.value)


def test_image_sbom_refuses_bad_arguments_before_touching_the_engine():
    client = client_for(FakeContainer([]))
    with pytest.raises(ValueError, match="timezone-aware"):
        image_sbom(client, SUBJECT, timestamp=datetime(2025, 1, 1))
    assert client.containers.created == []


def test_package_kind_is_checked():
    with pytest.raises(ValueError, match="unknown package kind 'rpm'"):
        Package("bash", "5.2", "rpm", "pkg:rpm/fedora/bash@5.2", "/var/lib/rpm")


def test_package_is_frozen():
    package = DEBIAN_PACKAGES[0]
    with pytest.raises(AttributeError):
        package.name = "other"  # type: ignore[misc]
    assert replace(package, found_at="/x") != package
