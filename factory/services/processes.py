"""The processes `factory services up` starts: recorded by PID, waited for, stopped by PID.

`up` starts dockerd and docker-registry detached, so they outlive the command, and writes each
one's PID and kernel start time to `<data_dir>/services.json`. `down` stops exactly those and
nothing else: a PID whose start time changed belongs to someone else now. A lock on the data dir
keeps two `up`/`down` calls from starting or stopping the same thing twice.
"""

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from factory.errors import ServiceError
from factory.services.host_commands import LOG_TAIL_LINES, STANDARD_PATH, run_command
from factory.services.state import ServicePaths

# Timeouts and polling, in seconds.
# dockerd gives running containers 15 s to stop, then stops its containerd: allow for both.
STOP_TIMEOUT_S = 45.0
KILL_WAIT_S = 5.0
LOCK_TIMEOUT_S = 600.0
POLL_INTERVAL_S = 0.1

# Services this process started, kept referenced: a collected Popen of a running child warns,
# and `down` in the same process reaps them through it.
_CHILDREN: dict[int, subprocess.Popen] = {}


def read_state(paths: ServicePaths) -> dict:
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


def _write_state(paths: ServicePaths, state: dict) -> None:
    tmp = paths.state_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(paths.state_file)


def forget(paths: ServicePaths, name: str) -> None:
    state = read_state(paths)
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


def process_identity(pid: int) -> dict:
    """The PID and kernel start time a record of a started process keeps (what `is_running`
    checks it by)."""
    stat = _proc_stat(pid)
    return {"pid": pid, "start_time": stat[1] if stat else None}


def is_running(record: dict) -> bool:
    """Whether the process we recorded still runs (same PID *and* start time: not a reused PID)."""
    stat = _proc_stat(int(record["pid"]))
    return stat is not None and stat[0] != "Z" and stat[1] == record.get("start_time")


def refuse_if_running(started: dict, name: str, where: str) -> None:
    """A process we started that runs but does not answer must not get a twin."""
    record = started.get(name)
    if record and is_running(record):
        msg = (
            f"{name} started by factory (pid {record['pid']}) runs but does not answer at {where}: "
            f"see its log {record['log']}, then run `factory services down` and "
            "`factory services up`"
        )
        raise ServiceError(msg)


def start_detached(argv: list[str], log: Path) -> subprocess.Popen:
    """Start a daemon in its own session, its output in `log`, in the log's folder.

    Its own session: it outlives us, and a Ctrl-C meant for the caller does not reach it before
    the caller stops it in order. Not the caller's folder: a daemon must not pin a temporary
    directory. The PATH has the sbin directories, where dockerd finds containerd and runc.
    """
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=log.parent,
            env={**os.environ, "PATH": f"{STANDARD_PATH}:{os.environ.get('PATH', '')}"},
        )


def spawn(
    paths: ServicePaths, name: str, argv: list[str], log: Path, **extra: str
) -> tuple[subprocess.Popen, dict]:
    """Start a service detached (`start_detached`) and record it in the state."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists():
        log.replace(log.with_name(log.name + ".1"))
    proc = start_detached(argv, log)
    _CHILDREN[proc.pid] = proc
    record = {
        **process_identity(proc.pid),
        "argv": argv,
        "log": str(log),
        "started_at": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        **extra,
    }
    state = read_state(paths)
    state[name] = record
    _write_state(paths, state)
    return proc, record


def start_service(
    paths: ServicePaths,
    name: str,
    argv: list[str],
    log: Path,
    *,
    ready: Callable[[], bool],
    timeout: float,
    on_failure: Callable[[], None] | None = None,
    **extra: str,
) -> tuple[dict, float]:
    """`spawn` a service and wait until `ready()`: (its state record, seconds it took).

    A service that exits or does not answer in time is stopped and forgotten (then `on_failure`
    cleans up after it) before the ServiceError naming `argv[0]` and its log goes up.
    """
    proc, record = spawn(paths, name, argv, log, **extra)
    try:
        elapsed = wait_until(ready, proc, what=argv[0], timeout=timeout, log=log)
    except ServiceError:
        forget(paths, name)
        if on_failure is not None:
            on_failure()
        raise
    return record, elapsed


def wait_until(
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
                f"{what} {problem} while starting. Last lines of {log}:\n{last_lines(log)}\n"
                f"Fix what the log says, then run `factory services up` again."
            )
            raise ServiceError(msg)
        time.sleep(POLL_INTERVAL_S)


def stop(record: dict) -> str:
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
            elif not is_running(record):
                return how
            time.sleep(POLL_INTERVAL_S)
    msg = f"process {pid} ({record['argv'][0]}) survived SIGKILL: check `ps -o stat -p {pid}`"
    raise ServiceError(msg)


def last_lines(log: Path) -> str:
    """The last LOG_TAIL_LINES lines of a daemon's log, or what stands in for them."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(empty log)"


def mount_points_under(*roots: Path) -> list[str]:
    """Mount points at or below `roots`, deepest first (the order they must be unmounted in)."""
    prefixes = [str(root) for root in roots]
    points = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and the like escaped as octal.
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == r or point.startswith(r + "/") for r in prefixes):
            points.add(point)
    return sorted(points, key=len, reverse=True)


def unmount_under(*roots: Path) -> None:
    """Unmount whatever is still mounted under `roots`, deepest first."""
    for point in mount_points_under(*roots):
        run_command(["umount", point])


@contextlib.contextmanager
def locked(paths: ServicePaths) -> Iterator[None]:
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
