"""An extra, empty Docker Engine beside the project's own, for measurements and tests.

An ephemeral executor starts with an empty local cache; the only honest way to measure what it
gets from the registry cache is a second `dockerd` that has never built anything. Two engines on
one host must not fight over the host's network set-up, so the extra one:

- keeps its data root, exec root, pidfile, socket and log under the caller's temporary folder;
- runs with `--iptables=false`: a second daemon that manages iptables flushes the first one's
  chains and cuts the project's engine off;
- gets a Linux bridge of its own (not docker0, which the project's engine owns). `--bridge=none`
  is not enough: BuildKit runs every RUN step on the engine's default bridge network and fails
  with "network bridge not found" without one, and `docker build --network none` would change the
  steps' cache keys, so the layers would no longer match the ones other engines pushed. With
  iptables off, containers on that bridge have no route out, which the builds here do not need.

It is stopped by its PID (SIGTERM, then SIGKILL), its managed containerd too if it outlived it,
whatever is still mounted under its folder is unmounted (a killed or failed dockerd leaves bind
and overlay mounts behind), and the bridge is deleted. Needs root, like any dockerd.
"""

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import requests

from factory.errors import ServiceError
from factory.services.host_commands import STANDARD_PATH
from factory.services.processes import last_lines, mount_points_under, start_detached

START_TIMEOUT_S = 60.0
PING_TIMEOUT_S = 2.0
# dockerd gives running containers 15 s to stop, then stops its containerd: allow for both.
STOP_TIMEOUT_S = 45.0
KILL_WAIT_S = 5.0
POLL_INTERVAL_S = 0.1
COMMAND_TIMEOUT_S = 30.0
# sun_path holds 108 bytes; containerd puts `containerd/containerd.sock.ttrpc` under the exec root.
MAX_SOCKET_PATH = 100
CONTAINERD_SOCKET_SUFFIX = "containerd/containerd.sock.ttrpc"
# Bridge subnets are taken from here, one /24 per extra engine, avoiding every address and route
# the host already has.
BRIDGE_POOL = ipaddress.ip_network("10.231.0.0/16")


@dataclass
class ExtraEngine:
    """A running extra dockerd: where it answers and what must be cleaned up after it."""

    docker_host: str
    root: Path
    exec_root: Path  # under root; its managed containerd's pidfile is found here
    bridge: str
    subnet: str
    log: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def extra_engine(tmpdir: Path | str) -> Iterator[str]:
    """Run an empty extra Docker Engine under `tmpdir`; yield its DOCKER_HOST; stop and remove it.

    Keep `tmpdir` short (e.g. `tempfile.mkdtemp(prefix="fx-")` under /tmp): unix socket paths
    are limited to about 100 bytes.
    """
    engine = start_extra_engine(tmpdir)
    try:
        yield engine.docker_host
    finally:
        stop_extra_engine(engine)


def start_extra_engine(tmpdir: Path | str) -> ExtraEngine:
    """Start a dockerd with its own state and bridge under `tmpdir`; return once it answers."""
    if os.geteuid() != 0:
        msg = "an extra Docker Engine needs root (dockerd mounts and creates a bridge): run as root"
        raise ServiceError(msg)
    if shutil.which("dockerd", path=STANDARD_PATH) is None:
        msg = "dockerd is not installed: run `factory services up` (it installs docker.io)"
        raise ServiceError(msg)
    token = secrets.token_hex(4)
    root = Path(tmpdir).resolve() / f"engine-{token}"
    socket_path = root / "docker.sock"
    data_root, exec_root = root / "data", root / "x"
    longest = max(len(str(socket_path)), len(str(exec_root / CONTAINERD_SOCKET_SUFFIX)))
    if longest > MAX_SOCKET_PATH:
        msg = (
            f"socket paths under {root} would be {longest} bytes, more than unix sockets allow: "
            "give extra_engine a shorter temporary folder, e.g. tempfile.mkdtemp(prefix='fx-')"
        )
        raise ServiceError(msg)
    data_root.mkdir(parents=True)
    exec_root.mkdir()
    bridge, subnet = _create_bridge(f"fxb{token}")
    log = root / "dockerd.log"
    argv = [
        "dockerd",
        "--host",
        f"unix://{socket_path}",
        "--data-root",
        str(data_root),
        "--exec-root",
        str(exec_root),
        "--pidfile",
        str(root / "dockerd.pid"),
        "--iptables=false",
        "--ip-forward=false",
        "--bridge",
        bridge,
    ]
    try:
        process = start_detached(argv, log)
    except OSError:
        _delete_bridge(bridge)
        raise
    engine = ExtraEngine(
        docker_host=f"unix://{socket_path}",
        root=root,
        exec_root=exec_root,
        bridge=bridge,
        subnet=subnet,
        log=log,
        process=process,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(engine.docker_host):
        if process.poll() is not None or time.monotonic() > deadline:
            problem = (
                f"exited ({process.returncode})"
                if process.returncode is not None
                else f"did not answer within {START_TIMEOUT_S:.0f} s"
            )
            tail = last_lines(log)
            stop_extra_engine(engine, keep_files=True)
            msg = (
                f"the extra dockerd at {engine.docker_host} {problem}. Last lines of {log}:\n{tail}"
            )
            raise ServiceError(msg)
        time.sleep(POLL_INTERVAL_S)
    return engine


def stop_extra_engine(engine: ExtraEngine, *, keep_files: bool = False) -> None:
    """Stop the engine by its PID, unmount what it left, delete its bridge and (unless
    `keep_files`) its folder. Raises ServiceError when something could not be cleaned up."""
    _stop_process(engine.process)
    _stop_managed_containerd(engine.exec_root)
    leftover = _unmount_under(engine.root)
    _delete_bridge(engine.bridge)
    if leftover:
        msg = (
            f"still mounted after stopping the extra dockerd (pid {engine.pid}): "
            f"{', '.join(leftover)}; unmount them by hand before removing {engine.root}"
        )
        raise ServiceError(msg)
    if not keep_files:
        shutil.rmtree(engine.root, ignore_errors=True)


# -- process ------------------------------------------------------------------------------------


def _answers(docker_host: str) -> bool:
    if not Path(docker_host.removeprefix("unix://")).is_socket():
        return False
    try:
        with contextlib.closing(
            docker.APIClient(base_url=docker_host, version="auto", timeout=PING_TIMEOUT_S)
        ) as api:
            return bool(api.ping())
    except (docker.errors.DockerException, requests.RequestException):
        return False


def _stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; our own child, so `wait` also reaps it."""
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, KILL_WAIT_S)):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait_s)
    if process.poll() is None:
        msg = f"the extra dockerd (pid {process.pid}) survived SIGKILL: check `ps -p {process.pid}`"
        raise ServiceError(msg)


def _stop_managed_containerd(exec_root: Path) -> None:
    """Stop the containerd our dockerd started, if a SIGKILL left it running.

    Its PID comes from the pidfile under our exec root, and is only signalled when that process's
    command line names our exec root: a reused PID belongs to someone else.
    """
    pidfile = exec_root / "containerd" / "containerd.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            return
        if str(exec_root) not in cmdline:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(POLL_INTERVAL_S)


# -- mounts -------------------------------------------------------------------------------------


def _unmount_under(root: Path) -> list[str]:
    """Unmount everything under `root`; return what is still mounted afterwards."""
    for point in mount_points_under(root):
        if _run(["umount", point]).returncode != 0:
            # Busy (a process still has it open): detach it now, the kernel frees it later.
            _run(["umount", "--lazy", point])
    return mount_points_under(root)


# -- bridge -------------------------------------------------------------------------------------


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address in or a route to."""
    used = []
    addrs = json.loads(_run(["ip", "-j", "-4", "addr", "show"], check=True).stdout or "[]")
    for link in addrs:
        for info in link.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show"], check=True).stdout or "[]")
    for route in routes:
        dst = route.get("dst", "default")
        if dst != "default":
            used.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return used


def _create_bridge(name: str) -> tuple[str, str]:
    """Create bridge `name` with a free /24 from BRIDGE_POOL; return (name, subnet)."""
    used = _used_networks()
    subnets = list(BRIDGE_POOL.subnets(new_prefix=24))
    # A random start keeps two extra engines started at once from picking the same subnet.
    start = secrets.randbelow(len(subnets))
    for subnet in subnets[start:] + subnets[:start]:
        if not any(subnet.overlaps(n) for n in used):
            break
    else:
        msg = f"no free /24 left in {BRIDGE_POOL} for an extra engine's bridge: delete stale fxb*"
        raise ServiceError(msg)
    gateway = f"{next(subnet.hosts())}/{subnet.prefixlen}"
    _run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        _run(["ip", "addr", "add", gateway, "dev", name], check=True)
        _run(["ip", "link", "set", name, "up"], check=True)
    except ServiceError:
        _delete_bridge(name)
        raise
    return name, str(subnet)


def _delete_bridge(name: str) -> None:
    if Path(f"/sys/class/net/{name}").exists():
        _run(["ip", "link", "del", name], check=True)


def _run(argv: list[str], *, check: bool = False) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
            env={**os.environ, "PATH": f"{STANDARD_PATH}:{os.environ.get('PATH', '')}"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        msg = f"`{' '.join(argv)}` could not run: {exc}"
        raise ServiceError(msg) from exc
    if check and result.returncode != 0:
        msg = f"`{' '.join(argv)}` failed (exit {result.returncode}): {result.stderr.strip()}"
        raise ServiceError(msg)
    return result
