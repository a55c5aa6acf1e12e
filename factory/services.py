"""Local services for the embedded default: Docker Engine, registry, qemu emulation, base images.

`up` makes each part answer, starting only what is missing: Debian's `dockerd` and
`docker-registry` with their state under the data dir, qemu-user-static through binfmt_misc, and
the offline busybox base image for linux/amd64 and linux/arm64. What it starts is recorded (PID and
start time) in `<data_dir>/services.json`; `down` stops exactly those processes and nothing else.
Engines and registries someone else runs are used as they are and never stopped.

The base images are assembled here from Debian's busybox-static packages, byte for byte
reproducibly (fixed file times, uid 0, sorted entries, gzip without a timestamp), and pushed with
the registry API: the same package gives the same digests on any machine and after a registry
wipe, so the base-digest sensor never sees a change that is not one.
"""

import contextlib
import fcntl
import functools
import gzip
import hashlib
import io
import json
import os
import platform as host_platform
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import docker
import requests

from factory.errors import FactoryError, RegistryError, ServiceError
from factory.platforms import platform as lookup_platform
from factory.registry import (
    DOCKER_MANIFEST,
    RegistryClient,
    is_loopback,
    parse_platform,
    sha256_digest,
)
from factory.settings import Settings

Echo = Callable[[str], None]

# Timeouts and polling, in seconds.
ENGINE_PING_TIMEOUT_S = 3.0
ENGINE_START_TIMEOUT_S = 60.0
REGISTRY_PING_TIMEOUT_S = 3.0
REGISTRY_START_TIMEOUT_S = 20.0
# dockerd gives running containers 15 s to stop, then stops its containerd: allow for both.
STOP_TIMEOUT_S = 45.0
KILL_WAIT_S = 5.0
APT_TIMEOUT_S = 900.0
COMMAND_TIMEOUT_S = 120.0
LOCK_TIMEOUT_S = 600.0
POLL_INTERVAL_S = 0.1
LOG_TAIL_LINES = 25

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# Debian's docker.io client runs BuildKit builds on a 20.10 engine; newer static clients without
# buildx refuse BuildKit, and Debian 12 has no buildx package.
DOCKER_CLI = "/usr/bin/docker"
# sun_path holds 108 bytes; keep a margin for the engine's own sockets next to ours.
MAX_SOCKET_PATH = 100
# Services and commands run with the sbin directories on PATH: dockerd looks up containerd and
# runc there. The base images get the same PATH, as Docker's official images have.
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
QEMU_ENTRY = "qemu-aarch64"

BASE_REPOSITORY = "factory/base/busybox"
BASE_TAG = "1.35"
BASE_PLATFORMS = ("linux/amd64", "linux/arm64")
BASE_PACKAGE = "busybox-static"
HOST_APT_ARCHIVES = Path("/var/cache/apt/archives")
ETC_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
ETC_GROUP = b"root:x:0:\nnobody:x:65534:\n"
DOCKER_CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# Services this process started, kept referenced: a collected Popen of a running child warns,
# and `down` in the same process reaps them through it.
_CHILDREN: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class ServiceState:
    """One part of the local services: whether it is usable, and what `up` did or saw.

    `changed` is True when `up` started, installed, configured or pushed something for it.
    """

    name: str
    ok: bool
    detail: str
    changed: bool = False


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


@dataclass(frozen=True)
class _Paths:
    """Where the local services keep their state under the data dir."""

    data_dir: Path

    @property
    def state_file(self) -> Path:
        return self.data_dir / "services.json"

    @property
    def lock_file(self) -> Path:
        return self.data_dir / "services.lock"

    @property
    def docker_dir(self) -> Path:
        return self.data_dir / "docker"

    @property
    def docker_socket(self) -> Path:
        return self.docker_dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.docker_socket}"

    @property
    def exec_root(self) -> Path:
        # dockerd puts containerd's sockets under its exec-root: a path under the data dir can
        # exceed the unix socket limit, so use a short one, unique per data dir.
        tag = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:10]
        return Path("/run") / f"factory-docker-{tag}"

    @property
    def registry_dir(self) -> Path:
        return self.data_dir / "registry"

    @property
    def base_dir(self) -> Path:
        return self.data_dir / "base"


# -- public API ---------------------------------------------------------------------------------


def docker_host(settings: Settings) -> str:
    """The engine Factory uses: DOCKER_HOST, else the default socket, else the project's own."""
    env_host = os.environ.get("DOCKER_HOST")
    if env_host:
        return env_host
    paths = _Paths(settings.data_dir)
    engine = _answering_engine(paths)
    if engine is None:
        raise ServiceError(_no_engine_message(paths))
    return engine[0]


def gpu_runtime_available(docker_host: str) -> bool:
    """Whether the engine at `docker_host` has the NVIDIA runtime (so GPU work can run there)."""
    try:
        with contextlib.closing(_engine_api(docker_host, ENGINE_PING_TIMEOUT_S)) as api:
            runtimes = api.info().get("Runtimes") or {}
    except (docker.errors.DockerException, requests.RequestException) as exc:
        msg = (
            f"Docker Engine at {docker_host} does not answer ({exc}): see `factory services status`"
        )
        raise ServiceError(msg) from exc
    return "nvidia" in runtimes


def up(settings: Settings, *, echo: Echo = print) -> list[ServiceState]:
    """Make the engine, registry, qemu and base images ready, starting only what is missing."""
    paths = _Paths(settings.data_dir)
    with _locked(paths):
        states = [
            _engine_up(paths, echo),
            _registry_up(settings, paths, echo),
            _qemu_up(echo),
        ]
        states.extend(_base_up(settings, paths, echo))
    return states


def down(settings: Settings, *, echo: Echo = print) -> list[ServiceState]:
    """Stop the registry and dockerd that `up` started (by PID); data stays in place."""
    paths = _Paths(settings.data_dir)
    states = []
    with _locked(paths):
        for name, label in (("registry", "registry"), ("dockerd", "engine")):
            record = _read_state(paths).get(name)
            if record is None:
                states.append(ServiceState(label, True, "not started by factory: left alone"))
                continue
            if _is_running(record):
                echo(f"{label}: stopping {name} (pid {record['pid']})")
                how = _stop(record)
                detail = f"stopped {name} (pid {record['pid']}, {how})"
            else:
                detail = f"{name} (pid {record['pid']}) was no longer running"
            if name == "dockerd":
                # A dockerd that was killed leaves its private bind mounts behind.
                _unmount_under(paths.docker_dir / "data", paths.exec_root)
            _forget(paths, name)
            echo(f"{label}: {detail}")
            states.append(ServiceState(label, True, detail, changed=True))
    return states


def status(settings: Settings) -> list[ServiceState]:
    """Report each part: engine (version, socket), registry, qemu binfmt, base image digests."""
    paths = _Paths(settings.data_dir)
    started = _read_state(paths)
    states = []
    try:
        engine = _answering_engine(paths)
        if engine is None:
            states.append(ServiceState("engine", False, _no_engine_message(paths)))
        else:
            states.append(ServiceState("engine", True, _engine_detail(*engine, started)))
    except ServiceError as exc:
        states.append(ServiceState("engine", False, str(exc)))

    client = RegistryClient(settings.registry, timeout=REGISTRY_PING_TIMEOUT_S)
    registry_ok = False
    try:
        client.ping()
        registry_ok = True
        states.append(ServiceState("registry", True, _registry_detail(settings, started)))
    except FactoryError as exc:
        states.append(ServiceState("registry", False, str(exc)))

    states.append(_qemu_state())

    offered: dict[str, str] = {}
    problem = f"registry {settings.registry} does not answer"
    if registry_ok:
        try:
            offered = _base_platforms(client)
            problem = "missing: run `factory services up`"
        except FactoryError as exc:
            problem = str(exc)
    ref = f"{settings.registry}/{BASE_REPOSITORY}:{BASE_TAG}"
    for oci_platform in BASE_PLATFORMS:
        digest = offered.get(oci_platform)
        detail = f"{ref} {oci_platform}: {digest or problem}"
        states.append(ServiceState(f"base {oci_platform}", digest is not None, detail))
    return states


def build_base_image(settings: Settings, oci_platform: str, *, echo: Echo = print) -> BaseImage:
    """Assemble the busybox base image for one platform from Debian's busybox-static package.

    The package is fetched once and kept under `<data_dir>/base/<arch>/`; delete that folder to
    pick up a newer Debian package.
    """
    _, arch, _ = parse_platform(oci_platform)
    paths = _Paths(settings.data_dir)
    deb = _busybox_deb(paths, arch, echo)
    version = _deb_version(deb)
    busybox, mtime = _busybox_binary(deb)
    applets = _applets(paths, arch, busybox, echo)
    layer_tar = busybox_layer(busybox, applets, mtime=mtime)
    return assemble_image(
        layer_tar, oci_platform=oci_platform, mtime=mtime, package_version=version
    )


# -- Docker Engine ------------------------------------------------------------------------------


def _engine_api(host: str, timeout: float) -> docker.APIClient:
    # "auto" asks the engine for its API version: Debian's 20.10 speaks 1.41, older than the SDK.
    return docker.APIClient(base_url=host, version="auto", timeout=timeout)


def _engine_version(host: str, timeout: float = ENGINE_PING_TIMEOUT_S) -> str | None:
    """The engine's version if it answers `/_ping` at `host`, else None."""
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).is_socket():
        return None
    try:
        with contextlib.closing(_engine_api(host, timeout)) as api:
            api.ping()
            return api.version().get("Version", "unknown")
    except (docker.errors.DockerException, requests.RequestException):
        return None


def _no_engine_message(paths: _Paths) -> str:
    return (
        f"no Docker Engine answers at {DEFAULT_DOCKER_HOST} or {paths.docker_host}: "
        "run `factory services up` to start one, or set DOCKER_HOST to an engine you run"
    )


def _engine_detail(host: str, version: str, started: dict) -> str:
    record = started.get("dockerd")
    whose = ""
    if record and record.get("host") == host and _is_running(record):
        whose = f", dockerd started by factory (pid {record['pid']}, log {record['log']})"
    return f"Docker Engine {version} at {host}{whose}"


def _answering_engine(paths: _Paths) -> tuple[str, str] | None:
    """(host, version) of the engine to use without starting one, or None."""
    env_host = os.environ.get("DOCKER_HOST")
    for host in (env_host,) if env_host else (DEFAULT_DOCKER_HOST, paths.docker_host):
        version = _engine_version(host)
        if version is not None:
            return host, version
    if env_host:
        msg = (
            f"DOCKER_HOST={env_host} does not answer: start that engine, or unset DOCKER_HOST "
            "so that `factory services up` uses the default socket or starts its own dockerd"
        )
        raise ServiceError(msg)
    return None


def _engine_up(paths: _Paths, echo: Echo) -> ServiceState:
    # Builds need Debian's 20.10 client (BuildKit without buildx), whichever engine they use.
    installed = _installed({DOCKER_CLI: "docker.io"}, echo)
    engine = _answering_engine(paths)
    if engine is None and _installed({"dockerd": "docker.io"}, echo):
        installed = True
        # The package's own init script may have started the system engine.
        engine = _answering_engine(paths)
    started = _read_state(paths)
    if engine is not None:
        detail = _engine_detail(*engine, started)
        if os.environ.get("DOCKER_HOST"):
            detail += " (DOCKER_HOST)"
        echo(f"engine: using {detail}")
        return ServiceState("engine", True, detail, changed=installed)

    _refuse_if_running(started, "dockerd", paths.docker_host)
    if len(str(paths.docker_socket)) > MAX_SOCKET_PATH:
        msg = (
            f"the engine socket path {paths.docker_socket} is longer than unix sockets allow: "
            "set FACTORY_DATA_DIR to a shorter folder, or DOCKER_HOST to an engine you run"
        )
        raise ServiceError(msg)
    data_root = paths.docker_dir / "data"
    data_root.mkdir(parents=True, exist_ok=True)
    paths.exec_root.mkdir(parents=True, exist_ok=True)
    # A dockerd that was killed or failed to start leaves bind mounts on its data root;
    # a new one would stack its own on top of them.
    _unmount_under(data_root, paths.exec_root)
    argv = [
        "dockerd",
        "--host",
        paths.docker_host,
        "--data-root",
        str(data_root),
        "--exec-root",
        str(paths.exec_root),
        "--pidfile",
        str(paths.docker_dir / "dockerd.pid"),
    ]
    log = paths.docker_dir / "dockerd.log"
    echo(f"engine: starting dockerd at {paths.docker_host} (log: {log})")
    proc, record = _spawn(paths, "dockerd", argv, log, host=paths.docker_host)
    try:
        elapsed = _wait_until(
            lambda: _engine_version(paths.docker_host) is not None,
            proc,
            what="dockerd",
            timeout=ENGINE_START_TIMEOUT_S,
            log=log,
        )
    except ServiceError:
        _forget(paths, "dockerd")
        _unmount_under(data_root, paths.exec_root)
        raise
    version = _engine_version(paths.docker_host) or "unknown"
    echo(f"engine: Docker Engine {version} ready in {elapsed:.1f} s (pid {record['pid']})")
    detail = _engine_detail(paths.docker_host, version, _read_state(paths))
    return ServiceState("engine", True, detail, changed=True)


# -- registry -----------------------------------------------------------------------------------


def _registry_answers(client: RegistryClient) -> bool:
    try:
        client.ping()
    except ServiceError:
        return False
    except RegistryError as exc:
        msg = (
            f"something answers at {client.address} but not as a v2 registry ({exc}): "
            "free the port or point FACTORY_REGISTRY at a registry"
        )
        raise ServiceError(msg) from exc
    return True


def _registry_detail(settings: Settings, started: dict) -> str:
    record = started.get("registry")
    whose = ""
    if record and _is_running(record):
        whose = f", started by factory (pid {record['pid']}, log {record['log']})"
    return f"registry at {settings.registry}{whose}"


def _registry_up(settings: Settings, paths: _Paths, echo: Echo) -> ServiceState:
    client = RegistryClient(settings.registry, timeout=REGISTRY_PING_TIMEOUT_S)
    started = _read_state(paths)
    if _registry_answers(client):
        detail = _registry_detail(settings, started)
        echo(f"registry: using {detail}")
        return ServiceState("registry", True, detail)
    if not is_loopback(client.address):
        msg = (
            f"registry {settings.registry} does not answer, and Factory only starts a registry "
            "on a loopback address: start yours, or unset FACTORY_REGISTRY to use 127.0.0.1:5000"
        )
        raise ServiceError(msg)
    _refuse_if_running(started, "registry", settings.registry)
    installed = _installed({"docker-registry": "docker-registry"}, echo)
    if installed and _registry_answers(client):
        detail = f"registry at {settings.registry} (started by the docker-registry package)"
        echo(f"registry: using {detail}")
        return ServiceState("registry", True, detail, changed=True)

    config = paths.registry_dir / "config.yml"
    storage = paths.registry_dir / "data"
    storage.mkdir(parents=True, exist_ok=True)
    listen = client.address.replace("localhost", "127.0.0.1", 1)
    # YAML is a superset of JSON: write the config as JSON, no YAML library needed.
    registry_config = {
        "version": "0.1",
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            # Factory's gc deletes old image manifests by digest.
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": listen,
            # Signs upload state; without one the registry makes one up and warns at each start.
            "secret": secrets.token_hex(16),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    config.write_text(json.dumps(registry_config, indent=2) + "\n")
    log = paths.registry_dir / "registry.log"
    echo(f"registry: starting docker-registry on {listen} (log: {log})")
    proc, record = _spawn(paths, "registry", ["docker-registry", "serve", str(config)], log)
    try:
        elapsed = _wait_until(
            lambda: _registry_answers(client),
            proc,
            what="docker-registry",
            timeout=REGISTRY_START_TIMEOUT_S,
            log=log,
        )
    except ServiceError:
        _forget(paths, "registry")
        raise
    echo(f"registry: ready in {elapsed:.1f} s (pid {record['pid']})")
    detail = _registry_detail(settings, _read_state(paths))
    return ServiceState("registry", True, detail, changed=True)


# -- qemu emulation -----------------------------------------------------------------------------


def _native_arm64() -> bool:
    return host_platform.machine() in ("aarch64", "arm64")


def _binfmt_entry() -> tuple[bool, str]:
    """(enabled with the fix-binary flag, description) of the qemu-aarch64 binfmt entry."""
    entry = BINFMT_DIR / QEMU_ENTRY
    if not (BINFMT_DIR / "register").exists():
        return False, f"binfmt_misc is not mounted at {BINFMT_DIR}"
    if not entry.exists():
        return False, f"no {QEMU_ENTRY} entry in {BINFMT_DIR}"
    fields = dict(
        line.split(" ", 1) if " " in line else (line, "") for line in entry.read_text().splitlines()
    )
    enabled = "enabled" in fields
    flags = fields.get("flags:", "").strip()
    interpreter = fields.get("interpreter", "?").strip()
    detail = f"binfmt {QEMU_ENTRY} {'enabled' if enabled else 'disabled'}"
    detail += f" (interpreter {interpreter}, flags {flags or 'none'})"
    # F (fix-binary): the kernel opens the interpreter at registration, so it also works inside
    # containers, whose filesystems do not have it.
    return enabled and "F" in flags, detail


def _qemu_state() -> ServiceState:
    if _native_arm64():
        return ServiceState("qemu-aarch64", True, "native arm64 host: no emulation needed")
    ok, detail = _binfmt_entry()
    return ServiceState("qemu-aarch64", ok, detail)


def _qemu_up(echo: Echo) -> ServiceState:
    state = _qemu_state()
    if state.ok:
        echo(f"qemu: {state.detail}")
        return state
    _installed(
        {"qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support"}, echo
    )
    if not (BINFMT_DIR / "register").exists():
        echo(f"qemu: mounting binfmt_misc at {BINFMT_DIR}")
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)])
    echo(f"qemu: enabling {QEMU_ENTRY}")
    _run(["update-binfmts", "--enable", QEMU_ENTRY])
    ok, detail = _binfmt_entry()
    if not ok:
        display = _run(["update-binfmts", "--display", QEMU_ENTRY], check=False).stdout
        msg = (
            f"qemu emulation for linux/arm64 is not usable: {detail}. `update-binfmts --display "
            f"{QEMU_ENTRY}` says:\n{display.strip()}\nreinstall qemu-user-static (it registers "
            "the entry with the fix-binary flag) and run `factory services up` again"
        )
        raise ServiceError(msg)
    echo(f"qemu: {detail}")
    return ServiceState("qemu-aarch64", True, detail, changed=True)


# -- base images --------------------------------------------------------------------------------


def _base_platforms(client: RegistryClient) -> dict[str, str]:
    if client.head_digest(BASE_REPOSITORY, BASE_TAG) is None:
        return {}
    return client.platforms(BASE_REPOSITORY, BASE_TAG)


def _base_up(settings: Settings, paths: _Paths, echo: Echo) -> list[ServiceState]:
    client = RegistryClient(settings.registry)
    ref = f"{settings.registry}/{BASE_REPOSITORY}:{BASE_TAG}"
    offered = _base_platforms(client)
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


def _busybox_deb(paths: _Paths, arch: str, echo: Echo) -> Path:
    """The busybox-static package for `arch`, fetched once into `<data_dir>/base/<arch>/`.

    Debian and OCI spell amd64 and arm64 alike, so `arch` is also the Debian architecture.
    """
    folder = paths.base_dir / arch
    folder.mkdir(parents=True, exist_ok=True)
    pattern = f"{BASE_PACKAGE}_*_{arch}.deb"
    if not list(folder.glob(pattern)):
        _installed({"dpkg-deb": "dpkg", "apt-get": "apt"}, echo)
        host_arch = _run(["dpkg", "--print-architecture"]).stdout.strip()
        cached = list(HOST_APT_ARCHIVES.glob(pattern)) if arch == host_arch else []
        # Fetched into a private folder and moved in whole: a concurrent `up` or test never
        # sees half a package.
        with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as fetch:
            if cached:
                # The host's own apt cache: no network needed.
                newest = _newest_deb(cached)
                echo(f"base: using {newest}")
                shutil.copy2(newest, fetch)
            else:
                _download_deb(paths, arch, Path(fetch), native=arch == host_arch, echo=echo)
            for deb in Path(fetch).glob(pattern):
                deb.replace(folder / deb.name)
    return _newest_deb(list(folder.glob(pattern)))


def _download_deb(paths: _Paths, deb_arch: str, folder: Path, *, native: bool, echo: Echo) -> None:
    # The download runs as root into the data dir: apt's _apt sandbox user may not write there.
    options = ["-q", "-oAPT::Sandbox::User=root"]
    if native:
        echo(f"base: downloading {BASE_PACKAGE} ({deb_arch}) with the host's apt")
        download = ["apt-get", *options, "download", BASE_PACKAGE]
        if _run(download, cwd=folder, check=False).returncode != 0:
            _run(["apt-get", "-q", "update"], timeout=APT_TIMEOUT_S)
            _run(download, cwd=folder)
        return
    # A foreign architecture's package without `dpkg --add-architecture`: private package lists
    # and cache for that architecture only, so the host's apt state is not touched.
    apt_dir = paths.base_dir / "apt" / deb_arch
    (apt_dir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt_dir / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    options += [
        f"-oAPT::Architecture={deb_arch}",
        f"-oAPT::Architectures={deb_arch}",
        f"-oDir::State::Lists={apt_dir / 'lists'}",
        f"-oDir::Cache={apt_dir / 'cache'}",
    ]
    echo(f"base: downloading {BASE_PACKAGE} ({deb_arch}) with private {deb_arch} package lists")
    _run(["apt-get", *options, "update"], timeout=APT_TIMEOUT_S)
    _run(["apt-get", *options, "download", BASE_PACKAGE], cwd=folder, timeout=APT_TIMEOUT_S)


def _newest_deb(debs: list[Path]) -> Path:
    def compare(a: Path, b: Path) -> int:
        if a == b:
            return 0
        newer = _run(
            ["dpkg", "--compare-versions", _deb_version(a), "gt", _deb_version(b)], check=False
        )
        return 1 if newer.returncode == 0 else -1

    if not debs:
        msg = f"no {BASE_PACKAGE} package was downloaded: check apt's output above"
        raise ServiceError(msg)
    return max(debs, key=functools.cmp_to_key(compare))


def _deb_version(deb: Path) -> str:
    return _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()


def _busybox_binary(deb: Path) -> tuple[bytes, int]:
    """The `/bin/busybox` binary inside a busybox-static package, and its file time."""
    data = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)],
        capture_output=True,
        check=False,
        timeout=COMMAND_TIMEOUT_S,
    )
    if data.returncode != 0:
        problem = data.stderr.decode(errors="replace").strip()
        msg = f"cannot read {deb}: {problem}; delete it and run `factory services up` again"
        raise ServiceError(msg)
    with tarfile.open(fileobj=io.BytesIO(data.stdout)) as tar:
        member = tar.getmember("./bin/busybox")
        extracted = tar.extractfile(member)
        if extracted is None:
            msg = f"{deb} has no regular file ./bin/busybox"
            raise ServiceError(msg)
        return extracted.read(), int(member.mtime)


def _applets(paths: _Paths, arch: str, busybox: bytes, echo: Echo) -> list[str]:
    """The applet paths (`bin/ls`, `usr/bin/wget`, ...) as `busybox --list-full` prints them.

    A foreign binary runs through qemu's binfmt entry; where it cannot run (an arm64 host has no
    x86_64 emulation), the native package's list is used: both are built from one config.
    """
    binary = paths.base_dir / arch / "busybox"
    # Replaced, not rewritten: another process may be running the current file.
    partial = binary.with_name(f".busybox-{os.getpid()}")
    partial.write_bytes(busybox)
    partial.chmod(0o755)
    partial.replace(binary)
    try:
        listed = subprocess.run(
            [str(binary), "--list-full"],
            capture_output=True,
            text=True,
            check=True,
            timeout=COMMAND_TIMEOUT_S,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        native = "arm64" if _native_arm64() else "amd64"
        if native == arch:
            raise
        echo(f"base: cannot run the {arch} busybox here, using the {native} applet list")
        native_binary, _ = _busybox_binary(_busybox_deb(paths, native, echo))
        return _applets(paths, native, native_binary, echo)
    return [line for line in listed.split() if "/" in line and line != "bin/busybox"]


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


# -- processes we start -------------------------------------------------------------------------


def _read_state(paths: _Paths) -> dict:
    try:
        return json.loads(paths.state_file.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        msg = (
            f"{paths.state_file} is not valid JSON ({exc}): stop the processes it names by hand "
            "if they still run, then delete it"
        )
        raise ServiceError(msg) from exc


def _write_state(paths: _Paths, state: dict) -> None:
    tmp = paths.state_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(paths.state_file)


def _forget(paths: _Paths, name: str) -> None:
    state = _read_state(paths)
    state.pop(name, None)
    _write_state(paths, state)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may hold spaces: split after the last one.
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def _is_running(record: dict) -> bool:
    """Whether the process we recorded still runs (same PID *and* start time: not a reused PID)."""
    stat = _proc_stat(int(record["pid"]))
    return stat is not None and stat[0] != "Z" and stat[1] == record.get("start_time")


def _refuse_if_running(started: dict, name: str, where: str) -> None:
    """A process we started that runs but does not answer must not get a twin."""
    record = started.get(name)
    if record and _is_running(record):
        msg = (
            f"{name} started by factory (pid {record['pid']}) runs but does not answer at {where}: "
            f"see its log {record['log']}, then run `factory services down` and "
            "`factory services up`"
        )
        raise ServiceError(msg)


def _spawn(
    paths: _Paths, name: str, argv: list[str], log: Path, **extra: str
) -> tuple[subprocess.Popen, dict]:
    """Start a service detached (own session, so it outlives us) and record it in the state."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists():
        log.replace(log.with_name(log.name + ".1"))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Not the caller's folder: a service must not pin a temporary directory.
            cwd=log.parent,
            env={**os.environ, "PATH": f"{STANDARD_PATH}:{os.environ.get('PATH', '')}"},
        )
    _CHILDREN[proc.pid] = proc
    stat = _proc_stat(proc.pid)
    record = {
        "pid": proc.pid,
        "start_time": stat[1] if stat else None,
        "argv": argv,
        "log": str(log),
        "started_at": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        **extra,
    }
    state = _read_state(paths)
    state[name] = record
    _write_state(paths, state)
    return proc, record


def _wait_until(
    ready: Callable[[], bool],
    proc: subprocess.Popen,
    *,
    what: str,
    timeout: float,
    log: Path,
) -> float:
    """Poll until `ready()`; on exit or timeout stop the process and raise with its log tail."""
    started = time.monotonic()
    while True:
        if ready():
            return time.monotonic() - started
        code = proc.poll()
        late = time.monotonic() - started > timeout
        if code is not None or late:
            if code is None:
                proc.terminate()
                try:
                    proc.wait(KILL_WAIT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(KILL_WAIT_S)
            _CHILDREN.pop(proc.pid, None)
            problem = f"did not answer within {timeout:.0f} s" if late else f"exited ({code})"
            msg = (
                f"{what} {problem} while starting. Last lines of {log}:\n{_tail(log)}\n"
                f"Fix what the log says, then run `factory services up` again."
            )
            raise ServiceError(msg)
        time.sleep(POLL_INTERVAL_S)


def _stop(record: dict) -> str:
    """SIGTERM the recorded process, SIGKILL it after STOP_TIMEOUT_S; says which it took."""
    pid = int(record["pid"])
    for sig, wait_s, how in (
        (signal.SIGTERM, STOP_TIMEOUT_S, "SIGTERM"),
        (signal.SIGKILL, KILL_WAIT_S, "SIGKILL"),
    ):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            child = _CHILDREN.get(pid)
            if child is not None:
                # Our own child (started by `up` in this process): poll reaps it.
                if child.poll() is not None:
                    del _CHILDREN[pid]
                    return how
            elif not _is_running(record):
                return how
            time.sleep(POLL_INTERVAL_S)
    msg = f"process {pid} ({record['argv'][0]}) survived SIGKILL: check `ps -o stat -p {pid}`"
    raise ServiceError(msg)


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and the like escaped as octal.
        points.append(line.split()[4].encode().decode("unicode_escape"))
    return points


def _unmount_under(*roots: Path) -> None:
    """Unmount whatever is still mounted under `roots`, deepest first."""
    prefixes = [str(root) for root in roots]
    stale = [p for p in _mount_points() if any(p == r or p.startswith(r + "/") for r in prefixes)]
    for point in sorted(set(stale), key=len, reverse=True):
        _run(["umount", point])


# -- commands and packages ----------------------------------------------------------------------


def _run(
    argv: list[str],
    *,
    check: bool = True,
    cwd: Path | None = None,
    timeout: float = COMMAND_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; with `check`, raise ServiceError when it fails."""
    env = {**os.environ, "PATH": f"{STANDARD_PATH}:{os.environ.get('PATH', '')}"}
    env["DEBIAN_FRONTEND"] = "noninteractive"
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        msg = f"`{argv[0]}` is not installed: run `factory services up` as root to install it"
        raise ServiceError(msg) from exc
    except subprocess.TimeoutExpired as exc:
        msg = f"`{' '.join(argv)}` did not finish within {timeout:.0f} s"
        raise ServiceError(msg) from exc
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-LOG_TAIL_LINES:]
        msg = f"`{' '.join(argv)}` failed (exit {result.returncode}):\n" + "\n".join(output)
        raise ServiceError(msg)
    return result


def _installed(commands: dict[str, str], echo: Echo) -> bool:
    """Install the Debian packages providing missing commands; True if anything was installed."""
    missing = sorted(
        {pkg for cmd, pkg in commands.items() if not shutil.which(cmd, path=STANDARD_PATH)}
    )
    if not missing:
        return False
    packages = " ".join(missing)
    if os.geteuid() != 0 or not shutil.which("apt-get", path=STANDARD_PATH):
        msg = (
            f"{packages} must be installed ({', '.join(commands)} not found), and installing "
            f"needs root and apt-get: run `apt-get install {packages}` as root, or run "
            "`factory services up` as root"
        )
        raise ServiceError(msg)
    echo(f"apt: installing {packages}")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if _run(install, check=False, timeout=APT_TIMEOUT_S).returncode != 0:
        # Fresh machines often have no package lists yet.
        echo("apt: updating package lists")
        _run(["apt-get", "-q", "update"], timeout=APT_TIMEOUT_S)
        _run(install, timeout=APT_TIMEOUT_S)
    return True


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(empty log)"


@contextlib.contextmanager
def _locked(paths: _Paths) -> Iterator[None]:
    """Hold the data dir's services lock: concurrent `up`/`down` calls would start twice."""
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    with paths.lock_file.open("a+") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    msg = (
                        f"another `factory services up/down` has held {paths.lock_file} for "
                        f"{LOCK_TIMEOUT_S:.0f} s: wait for it, or find it with "
                        f"`fuser {paths.lock_file}`"
                    )
                    raise ServiceError(msg) from None
                time.sleep(POLL_INTERVAL_S * 5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
