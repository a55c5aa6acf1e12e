"""qemu emulation of linux/arm64 on an x86_64 host, through the kernel's binfmt_misc.

The arm64 half of the matrix builds and tests under qemu-user-static. Its binfmt entry must carry
the fix-binary flag: the kernel then opens the interpreter once, at registration, so it works
inside containers too, whose filesystems do not have it. A native arm64 host needs none of this.
"""

import platform as host_platform
from pathlib import Path

from factory.errors import ServiceError
from factory.services.host_commands import ensure_installed, run_command
from factory.services.state import Echo, ServiceState

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
QEMU_ENTRY = "qemu-aarch64"


def native_arm64() -> bool:
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


def qemu_state() -> ServiceState:
    if native_arm64():
        return ServiceState("qemu-aarch64", True, "native arm64 host: no emulation needed")
    ok, detail = _binfmt_entry()
    return ServiceState("qemu-aarch64", ok, detail)


def qemu_up(echo: Echo) -> ServiceState:
    state = qemu_state()
    if state.ok:
        echo(f"qemu: {state.detail}")
        return state
    ensure_installed(
        {"qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support"}, echo
    )
    if not (BINFMT_DIR / "register").exists():
        echo(f"qemu: mounting binfmt_misc at {BINFMT_DIR}")
        run_command(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)])
    echo(f"qemu: enabling {QEMU_ENTRY}")
    run_command(["update-binfmts", "--enable", QEMU_ENTRY])
    ok, detail = _binfmt_entry()
    if not ok:
        display = run_command(["update-binfmts", "--display", QEMU_ENTRY], check=False).stdout
        msg = (
            f"qemu emulation for linux/arm64 is not usable: {detail}. `update-binfmts --display "
            f"{QEMU_ENTRY}` says:\n{display.strip()}\nreinstall qemu-user-static (it registers "
            "the entry with the fix-binary flag) and run `factory services up` again"
        )
        raise ServiceError(msg)
    echo(f"qemu: {detail}")
    return ServiceState("qemu-aarch64", True, detail, changed=True)
