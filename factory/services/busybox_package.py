"""Debian's busybox-static package, the one input of the offline base images.

The package is fetched once per architecture into `<data_dir>/base/<arch>/`: from the host's apt
cache when it has it, with the host's apt for the native architecture, and with private package
lists for the foreign one (so the host's apt state is never touched). From it come the busybox
binary, its file time and version, and the applet list `busybox --list-full` prints.
"""

import functools
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from factory.errors import ServiceError
from factory.services.host_commands import (
    APT_TIMEOUT_S,
    COMMAND_TIMEOUT_S,
    ensure_installed,
    run_command,
)
from factory.services.qemu import native_arm64
from factory.services.state import Echo, ServicePaths

BASE_PACKAGE = "busybox-static"
HOST_APT_ARCHIVES = Path("/var/cache/apt/archives")


def busybox_deb(paths: ServicePaths, arch: str, echo: Echo) -> Path:
    """The busybox-static package for `arch`, fetched once into `<data_dir>/base/<arch>/`.

    Debian and OCI spell amd64 and arm64 alike, so `arch` is also the Debian architecture.
    """
    folder = paths.base_dir / arch
    folder.mkdir(parents=True, exist_ok=True)
    pattern = f"{BASE_PACKAGE}_*_{arch}.deb"
    if not list(folder.glob(pattern)):
        ensure_installed({"dpkg-deb": "dpkg", "apt-get": "apt"}, echo)
        host_arch = run_command(["dpkg", "--print-architecture"]).stdout.strip()
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


def _download_deb(
    paths: ServicePaths, deb_arch: str, folder: Path, *, native: bool, echo: Echo
) -> None:
    # The download runs as root into the data dir: apt's _apt sandbox user may not write there.
    options = ["-q", "-oAPT::Sandbox::User=root"]
    if native:
        echo(f"base: downloading {BASE_PACKAGE} ({deb_arch}) with the host's apt")
        download = ["apt-get", *options, "download", BASE_PACKAGE]
        if run_command(download, cwd=folder, check=False).returncode != 0:
            run_command(["apt-get", "-q", "update"], timeout=APT_TIMEOUT_S)
            run_command(download, cwd=folder)
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
    run_command(["apt-get", *options, "update"], timeout=APT_TIMEOUT_S)
    run_command(["apt-get", *options, "download", BASE_PACKAGE], cwd=folder, timeout=APT_TIMEOUT_S)


def _newest_deb(debs: list[Path]) -> Path:
    def compare(a: Path, b: Path) -> int:
        if a == b:
            return 0
        newer = run_command(
            ["dpkg", "--compare-versions", deb_version(a), "gt", deb_version(b)], check=False
        )
        return 1 if newer.returncode == 0 else -1

    if not debs:
        msg = f"no {BASE_PACKAGE} package was downloaded: check apt's output above"
        raise ServiceError(msg)
    return max(debs, key=functools.cmp_to_key(compare))


def deb_version(deb: Path) -> str:
    return run_command(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()


def busybox_binary(deb: Path) -> tuple[bytes, int]:
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


def applets(paths: ServicePaths, arch: str, busybox: bytes, echo: Echo) -> list[str]:
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
        native = "arm64" if native_arm64() else "amd64"
        if native == arch:
            raise
        echo(f"base: cannot run the {arch} busybox here, using the {native} applet list")
        native_binary, _ = busybox_binary(busybox_deb(paths, native, echo))
        return applets(paths, native, native_binary, echo)
    return [line for line in listed.split() if "/" in line and line != "bin/busybox"]
