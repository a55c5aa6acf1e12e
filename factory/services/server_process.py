"""A throw-away server process that a test or a bench script starts itself, and stops itself.

Owns the life of one such process (the Dagster webserver or daemon, moto's S3 server, PostgreSQL,
a registry of a test's own): `spawn` starts it in a session of its own, output appended to a log
file; `wait_until` polls a check until the server answers, failing with the logs' tails when the
process exits first (`ServerExited`) or the time runs out; `stop` signals it by its PID, then what
is left of its process group (the code servers and run workers a Dagster process starts are in
it), and nothing else. The services `factory services up` keeps across commands are processes.py's.
"""

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.5
LOG_TAIL_LINES = 40
T = TypeVar("T")


class ServerExited(RuntimeError):
    """The server process ended before it answered (a taken port, a bad config, a crash)."""


def free_port() -> int:
    """A loopback port nobody listens on right now (someone may take it before the server does)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(
    argv: Sequence[str | os.PathLike],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    **popen,
) -> subprocess.Popen:
    """`argv` in a session of its own, stdin closed, stdout and stderr appended to `log`.

    Its own session makes its process group id its PID: what it starts stays in that group and
    can be stopped by that id without touching anything else. `popen` goes to Popen (e.g. `user`).
    """
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(arg) for arg in argv],
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **popen,
        )


def log_tail(logs: Iterable[Path], lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of each log, each under its file name."""
    parts = []
    for log in logs:
        text = log.read_text(errors="replace") if log.exists() else ""
        parts.append(f"--- {log.name}\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(parts)


def wait_until(
    what: str,
    check: Callable[[], T],
    procs: Sequence[subprocess.Popen],
    logs: Callable[[], Iterable[Path]],
    *,
    timeout_s: float = START_TIMEOUT_S,
    poll_s: float = POLL_S,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `check` until it returns something true; that value.

    An exception in `retry_on` means "not yet" (the last one is named on timeout); any other goes
    through. Raises `ServerExited` as soon as one of `procs` has ended and `TimeoutError` after
    `timeout_s`, both with the tails of `logs()` (called then, so logs made meanwhile count).
    """
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        for proc in procs:
            if proc.poll() is not None:
                msg = f"{proc.args[0]} exited ({proc.returncode}) before {what}:\n"
                raise ServerExited(msg + log_tail(logs()))
        try:
            value = check()
            if value:
                return value
        except retry_on as exc:
            last = exc
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last}):\n"
            raise TimeoutError(msg + log_tail(logs()))
        time.sleep(poll_s)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member runs as another user: the group still exists
        return True
    return True


def stop(
    proc: subprocess.Popen,
    *,
    sig: signal.Signals = signal.SIGTERM,
    timeout_s: float = STOP_TIMEOUT_S,
    poll_s: float = 0.2,
) -> None:
    """`sig` to the process `spawn` started (SIGKILL if it outlives `timeout_s`), then SIGTERM and
    SIGKILL to what is left of its process group, whose id is its PID."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    for group_sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(proc.pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, group_sig)
        deadline = time.monotonic() + timeout_s / 3
        while time.monotonic() < deadline and _group_alive(proc.pid):
            time.sleep(poll_s)
