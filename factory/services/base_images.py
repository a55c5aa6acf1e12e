"""The offline busybox base image for linux/amd64 and linux/arm64, assembled and pushed by us.

The images are made from Debian's busybox-static packages, byte for byte reproducibly (fixed file
times, uid 0, sorted entries, gzip without a timestamp), and pushed with the registry API: the
same package gives the same digests on any machine and after a registry wipe, so the base-digest
sensor never sees a change that is not one.
"""

import gzip
import io
import json
import os
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime

from factory.platforms import platform as lookup_platform
from factory.registry.client import RegistryClient
from factory.registry.manifests import DOCKER_MANIFEST, parse_platform
from factory.registry.names import sha256_digest
from factory.services import busybox_package
from factory.services.busybox_package import BASE_PACKAGE
from factory.services.host_commands import STANDARD_PATH
from factory.services.state import Echo, ServicePaths, ServiceState
from factory.settings import Settings

BASE_REPOSITORY = "factory/base/busybox"
BASE_TAG = "1.35"
BASE_PLATFORMS = ("linux/amd64", "linux/arm64")
ETC_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
ETC_GROUP = b"root:x:0:\nnobody:x:65534:\n"
DOCKER_CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@dataclass(frozen=True)
class BaseImage:
    """One platform's busybox base image: its blobs, manifest and the package it came from."""

    oci_platform: str
    package_version: str
    layer: bytes
    config: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


def build_base_image(settings: Settings, oci_platform: str, *, echo: Echo = print) -> BaseImage:
    """Assemble the busybox base image for one platform from Debian's busybox-static package.

    The package is fetched once and kept under `<data_dir>/base/<arch>/`; delete that folder to
    pick up a newer Debian package.
    """
    _, arch, _ = parse_platform(oci_platform)
    paths = ServicePaths(settings.data_dir)
    deb = busybox_package.busybox_deb(paths, arch, echo)
    version = busybox_package.deb_version(deb)
    busybox, mtime = busybox_package.busybox_binary(deb)
    applets = busybox_package.applets(paths, arch, busybox, echo)
    layer_tar = busybox_layer(busybox, applets, mtime=mtime)
    return assemble_image(
        layer_tar, oci_platform=oci_platform, mtime=mtime, package_version=version
    )


def base_platforms(client: RegistryClient) -> dict[str, str]:
    if client.head_digest(BASE_REPOSITORY, BASE_TAG) is None:
        return {}
    return client.platforms(BASE_REPOSITORY, BASE_TAG)


def base_up(settings: Settings, echo: Echo) -> list[ServiceState]:
    client = RegistryClient(settings.registry)
    ref = f"{settings.registry}/{BASE_REPOSITORY}:{BASE_TAG}"
    offered = base_platforms(client)
    if all(p in offered for p in BASE_PLATFORMS):
        echo(f"base: {ref} has {', '.join(BASE_PLATFORMS)}")
        return [ServiceState(f"base {p}", True, f"{ref} {p}: {offered[p]}") for p in BASE_PLATFORMS]
    entries = []
    states = []
    for oci_platform in BASE_PLATFORMS:
        image = build_base_image(settings, oci_platform, echo=echo)
        client.push_blob(BASE_REPOSITORY, image.layer)
        client.push_blob(BASE_REPOSITORY, image.config)
        tag = f"{BASE_TAG}-{lookup_platform(oci_platform).slug}"
        digest = client.put_manifest(BASE_REPOSITORY, tag, DOCKER_MANIFEST, image.manifest)
        echo(f"base: pushed {settings.registry}/{BASE_REPOSITORY}:{tag} ({digest})")
        entries.append((digest, oci_platform))
        detail = f"{ref} {oci_platform}: {digest} (busybox-static {image.package_version})"
        states.append(ServiceState(f"base {oci_platform}", True, detail, changed=True))
    index = client.put_index(BASE_REPOSITORY, BASE_TAG, entries)
    echo(f"base: pushed {ref} ({index})")
    return states


def busybox_layer(busybox: bytes, applets: list[str], *, mtime: int) -> bytes:
    """A reproducible root filesystem tar: busybox, its applet symlinks, /etc/passwd and /tmp.

    Every entry is owned by root with the same time and sorted by path, so equal inputs give
    equal bytes; the symlinks are what `busybox --install -s` would make.
    """
    files: dict[str, tuple[bytes, int]] = {
        "bin/busybox": (busybox, 0o755),
        "etc/passwd": (ETC_PASSWD, 0o644),
        "etc/group": (ETC_GROUP, 0o644),
    }
    dirs = {"bin": 0o755, "etc": 0o755, "root": 0o700, "tmp": 0o1777}
    links = {applet: "/bin/busybox" for applet in applets if applet not in files}
    for path in (*files, *links):
        parent = os.path.dirname(path)
        while parent:
            dirs.setdefault(parent, 0o755)
            parent = os.path.dirname(parent)

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted({*dirs, *files, *links}):
            info = tarfile.TarInfo(path)
            info.mtime = mtime
            info.uname = info.gname = "root"
            if path in dirs:
                info.type, info.mode = tarfile.DIRTYPE, dirs[path]
                tar.addfile(info)
            elif path in files:
                content, info.mode = files[path]
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, links[path]
                tar.addfile(info)
    return buffer.getvalue()


def assemble_image(
    layer_tar: bytes, *, oci_platform: str, mtime: int, package_version: str
) -> BaseImage:
    """A one-layer Docker v2 image (gzip layer, config, manifest) for a root filesystem tar."""
    os_, arch, variant = parse_platform(oci_platform)
    created = datetime.fromtimestamp(mtime, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # mtime=0 keeps the gzip header free of the build time.
    layer = gzip.compress(layer_tar, compresslevel=9, mtime=0)
    config = {
        "architecture": arch,
        "os": os_,
        **({"variant": variant} if variant else {}),
        "created": created,
        "config": {
            "Env": [f"PATH={STANDARD_PATH}"],
            "Cmd": ["sh"],
            "Labels": {
                "org.opencontainers.image.title": "factory busybox base",
                "org.opencontainers.image.version": package_version,
                "org.opencontainers.image.source": f"debian:{BASE_PACKAGE}={package_version}",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer_tar)]},
        "history": [
            {
                "created": created,
                "created_by": f"factory services up: Debian {BASE_PACKAGE} {package_version}",
            }
        ],
    }
    config_bytes = _canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": DOCKER_CONFIG_TYPE,
            "size": len(config_bytes),
            "digest": sha256_digest(config_bytes),
        },
        "layers": [
            {"mediaType": DOCKER_LAYER_TYPE, "size": len(layer), "digest": sha256_digest(layer)}
        ],
    }
    return BaseImage(
        oci_platform=oci_platform,
        package_version=package_version,
        layer=layer,
        config=config_bytes,
        manifest=_canonical_json(manifest),
    )


def _canonical_json(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
