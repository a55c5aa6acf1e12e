"""Which packages a filesystem tar stream holds, read in one pass without extracting anything.

The stream is the one `docker export` gives for a created container, read one member at a time:
no file is held in memory whole, so a multi-gigabyte image costs the time to read it, not the
memory. Four sources name packages: the busybox binary (its version string), the dpkg database,
the apk database and Python distribution metadata. The SBOM (`factory.supply_chain.sbom`) is built
from the
`Package`s found here.
"""

import posixpath
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from typing import IO, BinaryIO

from packageurl import PackageURL

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
