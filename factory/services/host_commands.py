"""Host commands the local services need, and the Debian packages that provide them.

Every part of `factory services up` shells out (dpkg, apt-get, mount, update-binfmts, umount) and
may first have to install what it runs. One runner gives them all the same PATH (with the sbin
directories, where dockerd finds containerd and runc), the same timeouts and the same error: the
command line, its exit code and the tail of its output.
"""

import os
import shutil
import subprocess
from pathlib import Path

from factory.errors import ServiceError
from factory.services.state import Echo

# Timeouts, in seconds.
APT_TIMEOUT_S = 900.0
COMMAND_TIMEOUT_S = 120.0
LOG_TAIL_LINES = 25

# Services and commands run with the sbin directories on PATH: dockerd looks up containerd and
# runc there. The base images get the same PATH, as Docker's official images have.
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run_command(
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


def ensure_installed(commands: dict[str, str], echo: Echo) -> bool:
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
    if run_command(install, check=False, timeout=APT_TIMEOUT_S).returncode != 0:
        # Fresh machines often have no package lists yet.
        echo("apt: updating package lists")
        run_command(["apt-get", "-q", "update"], timeout=APT_TIMEOUT_S)
        run_command(install, timeout=APT_TIMEOUT_S)
    return True
