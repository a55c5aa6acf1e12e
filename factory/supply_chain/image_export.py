"""An image's filesystem read through the Docker Engine, as the packages found in it.

A created container is never started: its export is the image's flattened filesystem without
running anything from it (which for a foreign arch would need emulation). The export arrives as
an iterator of HTTP chunks; `_ChunkReader` makes it the readable stream `scan_filesystem` wants,
holding at most one chunk. The container is removed whatever happens.
"""

import io
import tarfile
from collections.abc import Iterable
from typing import Any

import docker.errors
import requests.exceptions

from factory.errors import StageError
from factory.platforms import platform as lookup_platform
from factory.supply_chain.image_scan import Package, scan_filesystem

_EXPORT_CHUNK = 1 << 20
_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
# A scan fails on the engine (errors above), a broken stream (tar, OS) or an unreadable member.
_SCAN_ERRORS = (*_DOCKER_ERRORS, tarfile.TarError, OSError, ValueError)


def exported_packages(docker_client: Any, image_ref: str, platform: str) -> list[Package]:
    """The packages in a local image, read from a created container's export.

    Engine and stream failures raise StageError(stage="sbom").
    """
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
    return packages


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
