"""The Docker Engine as Factory uses it: BuildKit builds via the CLI, containers via the SDK.

The docker SDK only drives the legacy builder (no inline cache, no BuildKit cache sharing), so
builds run `DOCKER_BUILDKIT=1 /usr/bin/docker build`; pushes, inspection and test containers use
the SDK or the same CLI.
"""

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict, Unpack

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from factory.build.buildlog import build_steps
from factory.errors import ServiceError, StageError
from factory.records.model import log_tail
from factory.safe_json import exception_line, printable

# Debian's docker.io client (20.10) drives the engine's embedded BuildKit; a newer client without
# buildx refuses BuildKit builds, so prefer it by path.
DOCKER_CLI_CANDIDATES = ("/usr/bin/docker", "docker")
BUILD_TIMEOUT_S = 3600
PUSH_TIMEOUT_S = 600
API_TIMEOUT_S = 120
TEST_MEMORY = "512m"
TEST_PIDS = 256
TEST_TMPFS = "64m"


@dataclass(frozen=True)
class BuildResult:
    """What one build did: its Dockerfile steps, how many came from the cache, its time and log."""

    steps: int
    cached: int
    seconds: float
    log: str


@dataclass(frozen=True)
class ImageFacts:
    """A built or pulled image as the engine holds it: its digest, size and layer count."""

    digest: str
    size_bytes: int
    layers: int


@dataclass(frozen=True)
class SuiteRun:
    """One test suite's run: its verdict, exit code, time, whether it timed out, its output."""

    suite: str
    passed: bool
    exit_code: int | None
    duration_s: float
    timed_out: bool
    output: str


def docker_cli() -> str:
    for candidate in DOCKER_CLI_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    msg = "no docker client found; run `factory services up` to install Debian's docker.io"
    raise ServiceError(msg)


def redact(text: str, secrets: dict[str, str]) -> str:
    """Replace every secret value in `text` (longest first, so overlapping values stay hidden)."""
    for secret_id, value in sorted(secrets.items(), key=lambda kv: -len(kv[1])):
        if value:
            text = text.replace(value, f"[secret:{secret_id}]")
    return text


def count_build_steps(log: str) -> tuple[int, int]:
    """(steps, cached) from BuildKit's plain progress: the `[i/n]` steps and which hit cache."""
    steps = build_steps(log)
    return max((s.total for s in steps), default=0), sum(s.cached for s in steps)


class SuiteContainer(TypedDict):
    """What a test container is made of: `Engine.create_test_container`'s arguments."""

    image_ref: str
    oci_platform: str
    suite: str
    script_path: Path
    environment: dict[str, str]
    read_only_root: NotRequired[bool]
    gpu: NotRequired[bool]
    run_id: NotRequired[str | None]  # the Dagster run whose step made it (a label)


# The label naming the Dagster run whose step made a test container.
RUN_LABEL = "io.factory.run_id"

# The digest `docker push` prints for the manifest it pushed.
_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64})")

# What an engine said about itself, by DOCKER_HOST, for this process's life: its API version
# (which a new client otherwise asks for) and its ID (`info`, one of the engine's slower calls).
# A worker process builds many combinations on the same engine, each with a new Engine; an ID is
# stable across the engine's restarts, and a version change means a new engine process, which a
# worker's life does not span in practice (and a wrong one fails the call that uses it, loudly).
_API_VERSIONS: dict[str, str] = {}
_ENGINE_IDS: dict[str, str] = {}


class Engine:
    """One Docker Engine, addressed by its DOCKER_HOST."""

    def __init__(self, docker_host: str):
        self.docker_host = docker_host
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.DockerClient(
                    base_url=self.docker_host,
                    timeout=API_TIMEOUT_S,
                    version=_API_VERSIONS.get(self.docker_host),  # None: ask the engine
                )
                if self.docker_host.startswith("unix://"):
                    # requests reads proxy settings from the environment on every call (about
                    # 1 ms of CPU each, some 20 calls a combination); a unix socket has no proxy.
                    self._client.api.trust_env = False
                self._client.ping()
                _API_VERSIONS[self.docker_host] = self._client.api.api_version
            # ValueError: urllib's, on an address it cannot parse ("tcp://[::1").
            except (DockerException, requests.RequestException, ValueError) as exc:
                msg = (
                    f"the Docker Engine at {printable(self.docker_host, limit=200)} does not "
                    f"answer ({exception_line(exc)}); "
                    "run `factory services status`, then `factory services up`"
                )
                raise ServiceError(msg) from exc
        return self._client

    def engine_id(self) -> str | None:
        """The ID this engine reports for itself (stable across restarts, distinct per engine);
        None when it does not say, which is not worth failing a build over."""
        known = _ENGINE_IDS.get(self.docker_host)
        if known is not None:
            return known
        try:
            info = self.client.info()
        except (DockerException, requests.RequestException):
            return None
        value = info.get("ID") if isinstance(info, dict) else None
        if not (isinstance(value, str) and value):
            return None
        _ENGINE_IDS[self.docker_host] = value
        return value

    def _cli_env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.docker_host, "DOCKER_BUILDKIT": "1"}

    def _cli(self, args: list[str], *, timeout: float, stage: str, what: str) -> str:
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [docker_cli(), *args],
                env=self._cli_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or "") + (exc.stderr or "") if isinstance(exc.stdout, str) else ""
            msg = f"{what} timed out after {timeout:.0f}s"
            raise StageError(msg, stage=stage, log_tail=log_tail(out), transient=True) from exc
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            transient = any(
                s in output
                for s in (
                    "connection refused",
                    "Cannot connect to the Docker daemon",
                    "i/o timeout",
                    "TLS handshake timeout",
                    "503 Service Unavailable",
                )
            )
            msg = f"{what} failed (exit {proc.returncode} after {time.monotonic() - started:.1f}s)"
            raise StageError(msg, stage=stage, log_tail=log_tail(output), transient=transient)
        return output

    def build(
        self,
        *,
        dockerfile: str,
        image_ref: str,
        cache_ref: str,
        oci_platform: str,
        secrets: dict[str, str] | None = None,
        extra_cache_from: Sequence[str] = (),
    ) -> BuildResult:
        """Build with BuildKit for one platform, importing and exporting the inline cache.

        `secrets` (id -> value) are offered as BuildKit secret mounts: they exist only while a
        `RUN --mount=type=secret,id=<id>` step runs, never in a layer, and their values are
        replaced by `[secret:<id>]` in everything this returns or raises.
        """
        started = time.monotonic()
        secrets = secrets or {}
        with (
            tempfile.TemporaryDirectory(prefix="factory-build-") as context,
            tempfile.TemporaryDirectory(prefix="factory-secrets-") as secret_dir,
        ):
            path = Path(context) / "Dockerfile"
            path.write_text(dockerfile)
            secret_args = []
            for secret_id, value in sorted(secrets.items()):
                source = Path(secret_dir) / secret_id
                source.touch(mode=0o600)
                source.write_text(value)
                secret_args += ["--secret", f"id={secret_id},src={source}"]
            args = [
                "build",
                "--progress=plain",
                "--platform",
                oci_platform,
                "--build-arg",
                "BUILDKIT_INLINE_CACHE=1",
                "--cache-from",
                cache_ref,
                # Imported only, never exported: the stack prefix that prewarm pushed.
                *[arg for ref in extra_cache_from for arg in ("--cache-from", ref)],
                "-t",
                image_ref,
                "-t",
                cache_ref,
                *secret_args,
                "-f",
                str(path),
                context,
            ]
            try:
                log = self._cli(
                    args,
                    timeout=BUILD_TIMEOUT_S,
                    stage="build",
                    what=f"docker build of {image_ref} for {oci_platform}",
                )
            except StageError as exc:
                raise StageError(
                    redact(str(exc), secrets),
                    stage="build",
                    log_tail=redact(exc.log_tail, secrets),
                    transient=exc.transient,
                ) from exc
        log = redact(log, secrets)
        steps, cached = count_build_steps(log)
        return BuildResult(steps=steps, cached=cached, seconds=time.monotonic() - started, log=log)

    def push(self, ref: str) -> tuple[str, str]:
        """Push a tag; return (digest, log)."""
        log = self._cli(
            ["push", ref], timeout=PUSH_TIMEOUT_S, stage="push", what=f"docker push {ref}"
        )
        found = _DIGEST_RE.findall(log)
        if not found:
            msg = f"docker push {ref} printed no digest"
            raise StageError(msg, stage="push", log_tail=log_tail(log))
        return found[-1], log

    def image_facts(self, ref: str, digest: str) -> ImageFacts:
        try:
            image = self.client.images.get(ref)
        except ImageNotFound as exc:
            msg = f"image {ref} is not in the engine at {self.docker_host}"
            raise StageError(msg, stage="build") from exc
        return ImageFacts(
            digest=digest,
            size_bytes=int(image.attrs.get("Size") or 0),
            layers=len(image.attrs.get("RootFS", {}).get("Layers") or []),
        )

    def ensure_local(self, *, image_ref: str, digest: str, oci_platform: str) -> str:
        """Make `image_ref` (tag) present locally as the image with `digest`, pulling if needed."""
        repository = image_ref.rsplit(":", 1)[0]
        pinned = f"{repository}@{digest}"
        try:
            image = self.client.images.get(image_ref)
            if pinned in (image.attrs.get("RepoDigests") or []):
                return f"image {image_ref} already in the engine\n"
        except ImageNotFound:
            pass
        try:
            image = self.client.images.pull(pinned, platform=oci_platform)
            image.tag(repository, image_ref.rsplit(":", 1)[1])
        except (APIError, requests.RequestException) as exc:
            msg = f"pulling {pinned} for {oci_platform} failed: {exc}"
            raise StageError(msg, stage="build", transient=True) from exc
        return f"pulled {pinned} for {oci_platform}\n"

    def retag(self, source: str, target: str) -> None:
        """Give the local image `source` the name `target` too."""
        repository, _, tag = target.rpartition(":")
        try:
            self.client.images.get(source).tag(repository, tag)
        except (APIError, ImageNotFound) as exc:
            msg = f"tagging {source} as {target} in the engine at {self.docker_host} failed: {exc}"
            raise StageError(msg, stage="build") from exc

    def create_test_container(
        self,
        *,
        image_ref: str,
        oci_platform: str,
        suite: str,
        script_path: Path,
        environment: dict[str, str],
        read_only_root: bool = True,
        gpu: bool = False,
        run_id: str | None = None,
    ):
        """A created (not started) test container: no network, memory/pids limits, no caps.
        Labelled with its suite and, when given, its run (`remove_test_containers_of`).

        With `gpu`, it requests every GPU of the host (a device request with the `gpu`
        capability and count -1, as `docker run --gpus all`); the engine's NVIDIA runtime
        provides them when the container starts.
        """
        target = f"/factory/tests/{suite}.sh"
        return self.client.containers.create(
            image_ref,
            command=["/bin/sh", target],
            environment=environment,
            network_mode="none",
            mem_limit=TEST_MEMORY,
            pids_limit=TEST_PIDS,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=read_only_root,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={TEST_TMPFS},mode=1777"},
            volumes={str(script_path.resolve()): {"bind": target, "mode": "ro"}},
            platform=oci_platform,
            labels={
                "io.factory.role": "test",
                "io.factory.suite": suite,
                **({RUN_LABEL: run_id} if run_id else {}),
            },
            device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
            if gpu
            else None,
        )

    def remove_test_containers_of(self, run_ids: Sequence[str]) -> int:
        """Remove the test containers that the runs' steps left (a lost worker removes nothing:
        its containers run on until their suites end, then stay). Returns how many."""
        removed = 0
        for run_id in run_ids:
            for container in self.client.containers.list(
                all=True, filters={"label": ["io.factory.role=test", f"{RUN_LABEL}={run_id}"]}
            ):
                try:
                    container.remove(force=True)
                except NotFound:
                    continue  # gone meanwhile
                removed += 1
        return removed

    def run_suite(self, *, timeout_s: int, **spec: Unpack[SuiteContainer]) -> SuiteRun:
        """Run one test suite in a fresh container (`create_test_container`): no network,
        memory/pids limits, and `timeout_s` after which it is killed."""
        suite, image_ref, oci_platform = spec["suite"], spec["image_ref"], spec["oci_platform"]
        started = time.monotonic()
        container = None
        timed_out = False
        exit_code: int | None = None
        try:
            container = self.create_test_container(**spec)
            container.start()
            try:
                result = container.wait(timeout=timeout_s)
                exit_code = int(result.get("StatusCode", -1))
            except (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout):
                timed_out = True
                try:
                    container.kill()
                except (APIError, NotFound):
                    pass
            output = container.logs(stdout=True, stderr=True).decode("utf-8", errors="replace")
        except (APIError, DockerException, requests.RequestException) as exc:
            msg = f"running test suite {suite!r} in {image_ref} ({oci_platform}) failed: {exc}"
            raise StageError(msg, stage="test", transient=True) from exc
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except (APIError, NotFound):
                    pass
        duration = time.monotonic() - started
        if timed_out:
            output += f"\n[factory] suite {suite!r} timed out after {timeout_s}s and was killed\n"
        return SuiteRun(
            suite=suite,
            passed=(exit_code == 0 and not timed_out),
            exit_code=exit_code,
            duration_s=duration,
            timed_out=timed_out,
            output=output,
        )
