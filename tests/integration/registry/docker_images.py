"""Tiny images for the registry tests: pushed with the docker CLI, removed from the registry after.

An image here is a one-file root filesystem imported with `docker import` (no base image, no
build), so each distinct content is its own layer and digest. `delete_repository` deletes every
tag's manifest of a test's throw-away repository through the registry API.
"""

import io
import subprocess
import tarfile

from factory.registry.client import RegistryClient
from factory.services.embedded import DOCKER_CLI

COMMAND_TIMEOUT_S = 120


def docker(env: dict[str, str], *args: str, stdin: bytes | None = None) -> str:
    """The docker CLI's stdout, stripped; the test fails with its stderr if it exits non-zero."""
    done = subprocess.run(
        [DOCKER_CLI, *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"docker {' '.join(args)} failed: {done.stderr.decode()}"
    return done.stdout.decode().strip()


def tiny_tar(content: str) -> bytes:
    """A one-file root filesystem: each content gives its own layer."""
    data = content.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("factory-test")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def import_tiny(env: dict[str, str], ref: str, content: str) -> str:
    """`docker import` of `tiny_tar(content)` as `ref`; the local image id."""
    return docker(env, "import", "-", ref, stdin=tiny_tar(content))


def delete_repository(client: RegistryClient, repository: str) -> None:
    for tag in client.list_tags(repository):
        digest = client.head_digest(repository, tag)
        if digest:
            client.delete_manifest(repository, digest)
