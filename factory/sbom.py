"""What a container image holds, as a CycloneDX SBOM.

The image's filesystem is read as the tar stream `docker export` gives for a created (never
started) container, one member at a time: nothing is extracted and no file is held in memory
whole, so a multi-gigabyte image costs the time to read it, not the memory. Four sources name
packages: the busybox binary (its version string), the dpkg database, the apk database and Python
distribution metadata. The BOM is built with cyclonedx-python-lib and is deterministic for a
given build: the serial number comes from the build id and the caller may pin the timestamp.
"""

import functools
import io
import json
import posixpath
import re
import tarfile
import time
import tomllib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.parser import HeaderParser
from importlib import metadata as importlib_metadata
from typing import IO, Any, BinaryIO

import docker.errors
import requests.exceptions
from cyclonedx.model import Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.component_evidence import ComponentEvidence, Occurrence
from cyclonedx.output.json import BY_SCHEMA_VERSION as JSON_OUTPUTTERS
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from factory.errors import StageError
from factory.platforms import platform as lookup_platform
from factory.settings import PROJECT_ROOT

__all__ = [
    "SPEC_VERSION",
    "Package",
    "build_sbom",
    "image_repository",
    "image_sbom",
    "scan_filesystem",
    "unique_packages",
    "validate_sbom",
]

# 1.6 rather than the library's newest (1.7): it is the version scanners and Dependency-Track
# read today, and it already has everything this BOM uses (evidence occurrences, tools.components).
SPEC_VERSION = SchemaVersion.V1_6

KINDS = ("busybox", "deb", "apk", "pypi")

_DPKG_STATUS = "var/lib/dpkg/status"
# distroless images keep one dpkg stanza per file here instead of one status file.
_DPKG_STATUS_D = "var/lib/dpkg/status.d/"
_APK_INSTALLED = "lib/apk/db/installed"
_PYTHON_PACKAGE_DIRS = frozenset({"site-packages", "dist-packages"})
_BIN_DIRS = frozenset({"bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin"})

_BUSYBOX_VERSION = re.compile(rb"BusyBox v(\d+(?:\.\d+)+)")
_SCAN_CHUNK = 1 << 20
_SCAN_OVERLAP = 64  # longer than any version string, so one split across two chunks is still seen
_MAX_HEADER_BYTES = 1 << 20  # Python metadata headers; the long description after them is skipped
_MAX_LINE_BYTES = 64 << 10
_MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit
_EXPORT_CHUNK = 1 << 20
_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:factory:sbom")
_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
# A scan fails on the engine (errors above), a broken stream (tar, OS) or an unreadable member.
_SCAN_ERRORS = (*_DOCKER_ERRORS, tarfile.TarError, OSError, ValueError)


@dataclass(frozen=True, order=True)
class Package:
    """One package found in an image; `found_at` is the absolute path of the evidence in it.

    `arch` and `source` (the dpkg Source / apk origin, which vulnerability databases key on) are
    empty where the packaging system has none.
    """

    name: str
    version: str
    kind: str
    purl: str
    found_at: str
    arch: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            msg = f"unknown package kind {self.kind!r} (known: {', '.join(KINDS)})"
            raise ValueError(msg)


# ---------------------------------------------------------------------------------------------
# Scanning a filesystem tar stream


@dataclass
class _ScanState:
    """What one pass over the stream collects; busybox is resolved only at the end (see below)."""

    packages: list[Package] = field(default_factory=list)
    busybox_versions: dict[str, str] = field(default_factory=dict)  # path -> version in it
    links: dict[str, str] = field(default_factory=dict)  # hard or symbolic link -> target path
    busybox_names: set[str] = field(default_factory=set)  # every entry whose name is busybox


def scan_filesystem(tar_stream: BinaryIO) -> list[Package]:
    """Return the packages a filesystem tar stream holds: unique by purl, sorted.

    The stream is read once, in order (`r|`), so it can come straight from the Docker Engine.
    A package seen at several paths is reported once, at its first path in sorted order.
    """
    state = _ScanState()
    with tarfile.open(fileobj=tar_stream, mode="r|") as archive:
        for member in archive:
            _visit(archive, member, state)
    return unique_packages([*state.packages, *_busybox_packages(state)])


def unique_packages(packages: Iterable[Package]) -> list[Package]:
    """One package per purl (a purl names the package, wherever it sits), in a stable order."""
    first: dict[str, Package] = {}
    for package in sorted(packages, key=lambda p: (p.purl, p.found_at)):
        first.setdefault(package.purl, package)
    return sorted(first.values(), key=lambda p: (p.kind, p.name, p.version, p.purl))


def _visit(archive: tarfile.TarFile, member: tarfile.TarInfo, state: _ScanState) -> None:
    """Read what one member tells; in stream mode its data is gone once the next is asked for."""
    path = _normalize(member.name)
    if posixpath.basename(path) == "busybox":
        state.busybox_names.add(path)
    if member.islnk() or member.issym():
        state.links[path] = _link_target(path, member)
    if not member.isreg():
        return
    if path == _DPKG_STATUS or _is_dpkg_status_d(path):
        state.packages.extend(_dpkg_packages(_extract(archive, member), path))
    elif path == _APK_INSTALLED:
        state.packages.extend(_apk_packages(_extract(archive, member), path))
    elif _is_python_metadata(path):
        state.packages.extend(_python_packages(_extract(archive, member), path))
    elif _may_be_busybox(path, member):
        version = _busybox_version(_extract(archive, member))
        if version:
            state.busybox_versions[path] = version


def _extract(archive: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    fileobj = archive.extractfile(member)
    if fileobj is None:  # only for non-regular members, which never get here
        msg = f"cannot read {member.name} from the filesystem stream"
        raise ValueError(msg)
    return fileobj


def _normalize(name: str) -> str:
    """`./bin/x`, `/bin/x` and `bin/x` are one path; kept relative, without a leading slash."""
    return posixpath.normpath("/" + name).lstrip("/")


def _link_target(path: str, member: tarfile.TarInfo) -> str:
    """A hard link names an archive path; a symlink names a path relative to its directory."""
    if member.islnk() or member.linkname.startswith("/"):
        return _normalize(member.linkname)
    return _normalize(posixpath.join(posixpath.dirname(path), member.linkname))


def _is_dpkg_status_d(path: str) -> bool:
    return path.startswith(_DPKG_STATUS_D) and not path.endswith(".md5sums")


def _is_python_metadata(path: str) -> bool:
    """dist-info METADATA in a package dir, egg-info PKG-INFO, or a one-file egg-info."""
    parts = path.split("/")
    if len(parts) < 2:
        return False
    if parts[-1] == "PKG-INFO" and parts[-2].endswith(".egg-info"):
        return True
    if len(parts) >= 3 and parts[-1] == "METADATA" and parts[-2].endswith(".dist-info"):
        return parts[-3] in _PYTHON_PACKAGE_DIRS
    return parts[-1].endswith(".egg-info") and parts[-2] in _PYTHON_PACKAGE_DIRS


def _may_be_busybox(path: str, member: tarfile.TarInfo) -> bool:
    """Executables named busybox, and executables in the bin directories.

    The second group is there because busybox is usually one inode with hundreds of hard-linked
    names: the export writes the content under the first name in walk order (`bin/[`) and
    `bin/busybox` only as a link to it, and a stream cannot go back for it. Reading those files
    costs no extra I/O (a stream reads skipped data anyway) and memory stays at one chunk.
    """
    if not member.mode & 0o111:
        return False
    return posixpath.basename(path) == "busybox" or posixpath.dirname(path) in _BIN_DIRS


def _busybox_version(fileobj: IO[bytes]) -> str | None:
    """The `BusyBox v1.35.0` version string, searched chunk by chunk with a small overlap."""
    tail = b""
    while True:
        chunk = fileobj.read(_SCAN_CHUNK)
        window = tail + chunk
        match = _BUSYBOX_VERSION.search(window)
        # A match that ends the window may be cut short; the overlap sees it whole next round.
        if match and (match.end() < len(window) or not chunk):
            return match.group(1).decode("ascii")
        if not chunk:
            return None
        tail = window[-_SCAN_OVERLAP:]


def _busybox_packages(state: _ScanState) -> Iterator[Package]:
    """A busybox-named entry whose content, through any links, holds the version string."""
    for name in sorted(state.busybox_names):
        version = state.busybox_versions.get(_resolve(name, state.links))
        if version:
            purl = PackageURL(type="generic", name="busybox", version=version).to_string()
            yield Package("busybox", version, "busybox", purl, "/" + name)


def _resolve(path: str, links: dict[str, str]) -> str:
    """Follow links through every component (merged-/usr images link `bin` to `usr/bin`)."""
    for _ in range(_MAX_LINK_HOPS):
        parts = path.split("/")
        for end in range(len(parts), 0, -1):
            prefix = "/".join(parts[:end])
            if prefix in links:
                path = posixpath.join(links[prefix], *parts[end:])
                break
        else:
            return path
    return path  # a link loop: the path names no content, so no version is found for it


def _lines(fileobj: IO[bytes]) -> Iterator[str]:
    """Text lines of a database file, one bounded line in memory at a time."""
    while raw := fileobj.readline(_MAX_LINE_BYTES):
        yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


def _stanzas(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """Blank-line separated `Key: value` / `K:value` records, as dpkg and apk write them.

    Continuation lines (leading whitespace) belong to fields such as Description, not needed.
    """
    fields: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            if fields:
                yield fields
            fields = {}
        elif not line[0].isspace():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    if fields:
        yield fields


def _dpkg_packages(fileobj: IO[bytes], path: str) -> Iterator[Package]:
    """Installed packages only: removed ones leave `deinstall ok config-files` stanzas behind.

    distroless status.d stanzas carry no Status line; there, being listed means installed.
    """
    for stanza in _stanzas(_lines(fileobj)):
        status = stanza.get("Status", "installed").split()
        name, version = stanza.get("Package"), stanza.get("Version")
        if not (name and version and status and status[-1] == "installed"):
            continue
        arch = stanza.get("Architecture", "")
        # "Source: glibc (2.36-9)": the name, as the security trackers key on it.
        source = stanza.get("Source", "").split(" ")[0] or name
        purl = _purl("deb", "debian", name, version, arch)
        yield Package(name, version, "deb", purl, "/" + path, arch, source)


def _apk_packages(fileobj: IO[bytes], path: str) -> Iterator[Package]:
    """`P:` name, `V:` version, `A:` arch, `o:` origin (the source package)."""
    for stanza in _stanzas(_lines(fileobj)):
        name, version = stanza.get("P"), stanza.get("V")
        if not (name and version):
            continue
        arch = stanza.get("A", "")
        purl = _purl("apk", "alpine", name, version, arch)
        yield Package(name, version, "apk", purl, "/" + path, arch, stanza.get("o") or name)


def _python_packages(fileobj: IO[bytes], path: str) -> Iterator[Package]:
    headers = _read_headers(fileobj)
    name, version = headers.get("Name"), headers.get("Version")
    if name and version:
        name, version = str(name).strip(), str(version).strip()
        purl = PackageURL(type="pypi", name=_pep503(name), version=version).to_string()
        yield Package(name, version, "pypi", purl, "/" + path)


def _read_headers(fileobj: IO[bytes]) -> Message:
    """The RFC 822 header block of core metadata; the description that follows can be huge."""
    lines: list[bytes] = []
    size = 0
    while size < _MAX_HEADER_BYTES and (raw := fileobj.readline(_MAX_LINE_BYTES)):
        if not raw.strip():
            break
        lines.append(raw)
        size += len(raw)
    return HeaderParser().parsestr(b"".join(lines).decode("utf-8", errors="replace"))


def _pep503(name: str) -> str:
    """PEP 503 normalization, which the pypi purl type requires."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _purl(kind: str, namespace: str, name: str, version: str, arch: str) -> str:
    qualifiers = {"arch": arch} if arch else {}
    return PackageURL(
        type=kind, namespace=namespace, name=name, version=version, qualifiers=qualifiers
    ).to_string()


# ---------------------------------------------------------------------------------------------
# Building and validating the BOM


def build_sbom(
    packages: Iterable[Package],
    *,
    image_ref: str,
    image_digest: str,
    platform: str,
    manifest_id: str,
    build_id: str,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """The CycloneDX BOM (as parsed JSON) of one image and the packages found in it.

    Same inputs and timestamp give the same document: the serial number is derived from the
    build id and every bom-ref is a purl, so two BOMs of one image can be diffed.
    """
    _check_subject(image_ref, image_digest, platform, timestamp)
    image = _image_component(image_ref, image_digest, platform, manifest_id, build_id)
    components = [_package_component(p) for p in unique_packages(packages)]
    bom = Bom(
        serial_number=uuid.uuid5(_SERIAL_NAMESPACE, build_id),
        metadata=BomMetaData(
            component=image,
            tools=[],
            timestamp=timestamp or datetime.now(UTC),
        ),
        components=components,
    )
    bom.metadata.tools.components.add(_tool_component())
    bom.register_dependency(image, components)
    return json.loads(JSON_OUTPUTTERS[SPEC_VERSION](bom).output_as_string())


def _check_subject(
    image_ref: str, image_digest: str, platform: str, timestamp: datetime | None
) -> None:
    """Bad arguments are a caller's bug: refused before an image is read, not after."""
    lookup_platform(platform)  # raises ValueError naming the known platforms
    if not _DIGEST.match(image_digest):
        msg = f"image digest {image_digest!r} of {image_ref} is not `algorithm:hex`"
        raise ValueError(msg)
    if timestamp is not None and timestamp.tzinfo is None:
        msg = "the SBOM timestamp must be timezone-aware (UTC)"
        raise ValueError(msg)


def _image_component(
    image_ref: str, image_digest: str, platform: str, manifest_id: str, build_id: str
) -> Component:
    """The image as the BOM's subject: named by repository, versioned by digest."""
    repository = image_repository(image_ref)
    purl = PackageURL(
        type="oci",
        name=repository.rsplit("/", 1)[-1].lower(),
        version=image_digest,
        qualifiers={"repository_url": repository, "arch": lookup_platform(platform).arch},
    )
    properties = {
        "factory:image_ref": image_ref,
        "factory:platform": platform,
        "factory:manifest_id": manifest_id,
        "factory:build_id": build_id,
    }
    return Component(
        type=ComponentType.CONTAINER,
        name=repository,
        version=image_digest,
        purl=purl,
        bom_ref=purl.to_string(),
        properties=[Property(name=k, value=v) for k, v in properties.items()],
    )


def image_repository(image_ref: str) -> str:
    """`host:port/path/name:tag@digest` -> `host:port/path/name` (a port's colon is not a tag)."""
    ref = image_ref.split("@", 1)[0]
    colon = ref.rfind(":")
    return ref[:colon] if colon > ref.rfind("/") else ref


def _package_component(package: Package) -> Component:
    properties = [Property(name="factory:kind", value=package.kind)]
    if package.source:
        properties.append(Property(name="factory:source_package", value=package.source))
    return Component(
        type=ComponentType.APPLICATION if package.kind == "busybox" else ComponentType.LIBRARY,
        name=package.name,
        version=package.version,
        purl=PackageURL.from_string(package.purl),
        bom_ref=package.purl,
        evidence=ComponentEvidence(occurrences=[Occurrence(location=package.found_at)]),
        properties=properties,
    )


def _tool_component() -> Component:
    return Component(
        type=ComponentType.APPLICATION,
        name="factory",
        version=_factory_version(),
        bom_ref="tool:factory",
    )


@functools.cache
def _factory_version() -> str:
    """The installed distribution's version, or the checkout's pyproject when run uninstalled."""
    try:
        return importlib_metadata.version("factory")
    except importlib_metadata.PackageNotFoundError:
        with (PROJECT_ROOT / "pyproject.toml").open("rb") as pyproject:
            return str(tomllib.load(pyproject)["project"]["version"])


def validate_sbom(bom: dict[str, Any]) -> None:
    """Check a BOM against the CycloneDX JSON schema (strict: unknown properties are errors)."""
    error = JsonStrictValidator(SPEC_VERSION).validate_str(json.dumps(bom))
    if error is not None:
        message = getattr(error.data, "message", str(error.data))
        msg = f"the SBOM is not valid CycloneDX {SPEC_VERSION.to_version()}: {message}"
        raise ValueError(msg)


# ---------------------------------------------------------------------------------------------
# Reading a real image through the Docker Engine


def image_sbom(
    docker_client: Any,
    image_ref: str,
    *,
    image_digest: str,
    platform: str,
    manifest_id: str,
    build_id: str,
    timestamp: datetime | None = None,
) -> tuple[dict[str, Any], float]:
    """The SBOM of a local image and the seconds it took.

    A created container is never started: its export is the image's flattened filesystem without
    running anything from it (which for a foreign arch would need emulation). The container is
    removed whatever happens. Engine and stream failures raise StageError(stage="sbom");
    bad arguments raise ValueError before the engine is asked anything.
    """
    _check_subject(image_ref, image_digest, platform, timestamp)
    started = time.perf_counter()
    container = _create_container(docker_client, image_ref, platform)
    try:
        packages = _scan_container(container)
    except _SCAN_ERRORS as exc:
        error = StageError(
            f"sbom: could not read the filesystem of {image_ref} ({platform}): {exc}",
            stage="sbom",
        )
        _remove_noting(container, error)
        raise error from exc
    _remove(container, image_ref)
    bom = build_sbom(
        packages,
        image_ref=image_ref,
        image_digest=image_digest,
        platform=platform,
        manifest_id=manifest_id,
        build_id=build_id,
        timestamp=timestamp,
    )
    return bom, time.perf_counter() - started


def _scan_container(container: Any) -> list[Package]:
    """Scan the export stream, closing it even when the tar ends before the HTTP body does."""
    chunks = container.export(_EXPORT_CHUNK)
    try:
        return scan_filesystem(_ChunkReader.buffered(chunks))
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _create_container(docker_client: Any, image_ref: str, platform: str) -> Any:
    """The command is a placeholder: an image without CMD cannot be created without one."""
    try:
        return docker_client.containers.create(
            image_ref,
            command=["/factory-sbom-never-started"],
            platform=lookup_platform(platform).oci_platform,
            network_disabled=True,
        )
    except _DOCKER_ERRORS as exc:
        msg = (
            f"sbom: could not create a container from {image_ref} ({platform}): {exc}. "
            f"Check that the image is present locally (docker image inspect {image_ref})."
        )
        raise StageError(msg, stage="sbom", transient=_is_transient(exc)) from exc


def _remove(container: Any, image_ref: str) -> None:
    try:
        container.remove(force=True)
    except _DOCKER_ERRORS as exc:
        msg = f"sbom: could not remove the scan container of {image_ref}: {exc}"
        raise StageError(msg, stage="sbom", transient=True) from exc


def _remove_noting(container: Any, error: StageError) -> None:
    """Remove after a failed scan; a cleanup failure is added to the scan error, not raised.

    The scan error is what the user acts on; the note says which container to remove by hand.
    """
    try:
        container.remove(force=True)
    except _DOCKER_ERRORS as exc:
        error.add_note(
            f"the scan container could not be removed either ({exc}): "
            f"docker rm -f {getattr(container, 'id', '?')}"
        )


def _is_transient(exc: Exception) -> bool:
    """A dead connection may come back; a missing image or a bad request will not."""
    return isinstance(exc, requests.exceptions.ConnectionError)


class _ChunkReader(io.RawIOBase):
    """Docker's iterator of export chunks as a readable file, holding at most one chunk."""

    def __init__(self, chunks: Iterable[bytes]):
        super().__init__()
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    @classmethod
    def buffered(cls, chunks: Iterable[bytes]) -> io.BufferedReader:
        return io.BufferedReader(cls(chunks), buffer_size=_EXPORT_CHUNK)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
