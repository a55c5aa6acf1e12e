"""The resident worker server: `factory run`'s workers, forked from a server that stays.

Each `factory run` used to start its own fork server, which imported Dagster, SQLAlchemy, the
Docker SDK and the rest (2 to 3 CPU-seconds) before the first combination could start: the
biggest fixed cost of a run. The resident server (factory/workers/resident_server.py) imports
those third-party modules once and stays for FACTORY_WORKER_IDLE_S seconds after it was last
used (default 900; 0 turns it off: each command starts its own fork server, as before).
`factory services up` starts it beside the other services, and `factory run` starts it when none
runs; `factory services down` stops it.

What a worker inherits from the server is only the third-party modules. The command that asks
for a worker sends its environment, umask, output (stdout and stderr), working directory and
`sys.path` with the request (the standard fork-server protocol carries the last two; the others
ride in the same preparation data), and the worker imports the project's own modules itself: a
setting read at import (the executor, the record store), an edited module or another checkout
is never seen from an earlier command. One server serves one interpreter: its key covers the
Python executable, `sys.path`, the environment variables that third-party modules read at
import (DAGSTER_* but DAGSTER_HOME, PYTHON*, FSSPEC_*) and the installed packages, so a `pip
install` gets a new server.

The servers' sockets live in FACTORY_WORKER_DIR (default /tmp/factory-workers-<uid>), a folder
that only this user may use: the socket forks a process that runs what it is sent, as this user,
so a folder that is a link, another user's, or open to others is refused, and `factory run`
starts its own fork server instead, with a warning.
"""

import contextlib
import fcntl
import hashlib
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from multiprocessing import context as mp_context
from multiprocessing import forkserver, popen_forkserver, reduction, resource_tracker, spawn, util
from pathlib import Path

from factory.errors import FactoryError

IDLE_ENV = "FACTORY_WORKER_IDLE_S"
DIR_ENV = "FACTORY_WORKER_DIR"
DEFAULT_IDLE_S = 900
MAX_IDLE_S = 7 * 24 * 3600
SERVER_SCRIPT = Path(__file__).with_name("resident_server.py")
# How long the server script may take to fork the server and leave.
SPAWN_TIMEOUT_S = 30
# A unix socket's path holds at most 107 bytes on Linux.
MAX_SOCKET_PATH = 107

# What the server imports before it forks: the third-party modules that the project's modules
# import (found with `python -X importtime`; tests/unit/workers/test_resident.py checks that
# loading the code location and opening the instance after these imports no other third-party
# module). Never a module of the project: those read settings at import.
PRELOAD = (
    "dagster",
    "dagster._core.execution.execute_in_process",
    "dagster._core.instance.factory",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
    "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.definitions.repository_definition.repository_data_builder",
    "dagster._core.definitions.external_asset",
    "dagster._core.types.primitive_mapping",
    "dagster._core.types.transform_typing",
    "dagster._core.secrets.env_file",
    "dagster._core.storage.migration.utils",
    "dagster._core.storage.root",
    "dotenv",
    "upath.implementations.local",
    "fsspec.implementations.local",
    "requests",
    "docker",
    "cyclonedx.model.bom",
    "cyclonedx.output.json",
    "jinja2.sandbox",
    "cryptography.exceptions",
    "cryptography.hazmat.primitives.hashes",
    "cryptography.hazmat.primitives.serialization",
    "botocore.exceptions",
    "yaml",
    "click",
    # Imported by the matrix asset only, where it cost each command 0.4 s.
    "pandas",
)

# Environment variables that a preloaded module may read at import, so part of a server's key.
_KEY_ENV_PREFIXES = ("DAGSTER_", "PYTHON", "FSSPEC_")
_KEY_ENV_EXCLUDED = frozenset({"DAGSTER_HOME"})


class ResidentUnavailable(FactoryError):
    """No resident server can serve this command (turned off, or its folder cannot be used)."""


class ResidentTurnedOff(ResidentUnavailable):
    """FACTORY_WORKER_IDLE_S=0: no resident server, by choice (nothing to warn about)."""


def idle_seconds(environ=None) -> int:
    """FACTORY_WORKER_IDLE_S, checked (0: no resident server)."""
    from factory.env_numbers import env_int

    return env_int(
        IDLE_ENV,
        DEFAULT_IDLE_S,
        low=0,
        high=MAX_IDLE_S,
        what="how long the resident worker server stays unused (0: none)",
        environ=environ,
    )


def worker_dir(environ=None) -> Path:
    environ = os.environ if environ is None else environ
    raw = environ.get(DIR_ENV, "").strip()
    if raw:
        return Path(raw).absolute()
    return Path(f"/tmp/factory-workers-{os.geteuid()}")


def usable_dir(path: Path, *, create: bool = True) -> Path:
    """`path`, made if missing (mode 0700) with `create`; ResidentUnavailable when it is missing
    (without `create`) or when another user could use it."""
    from factory.safe_json import printable

    shown = printable(str(path), limit=200)
    try:
        if create:
            path.mkdir(mode=0o700, parents=False)
    except FileExistsError:
        pass
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        msg = f"{DIR_ENV} folder {shown} cannot be made: {_reason(exc)}"
        raise ResidentUnavailable(msg) from None
    try:
        st = path.lstat()
    except (OSError, ValueError) as exc:
        msg = f"{DIR_ENV} folder {shown}: {_reason(exc)}"
        raise ResidentUnavailable(msg) from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        msg = f"{DIR_ENV} folder {shown} is not a folder (a link?)"
        raise ResidentUnavailable(msg)
    if st.st_uid != os.geteuid():
        msg = f"{DIR_ENV} folder {shown} belongs to uid {st.st_uid}, not to this user"
        raise ResidentUnavailable(msg)
    if st.st_mode & 0o077:
        msg = f"{DIR_ENV} folder {shown} is open to other users (mode {st.st_mode & 0o777:o})"
        raise ResidentUnavailable(msg)
    return path


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def server_key(environ=None) -> str:
    """What a server's imports depend on, hashed: one server per interpreter and setting."""
    environ = os.environ if environ is None else environ
    env = sorted(
        (k, v)
        for k, v in environ.items()
        if k.startswith(_KEY_ENV_PREFIXES) and k not in _KEY_ENV_EXCLUDED
    )
    installed = []
    for entry in sys.path:
        with contextlib.suppress(OSError):
            installed.append((entry, os.stat(entry or ".").st_mtime_ns))
    with contextlib.suppress(OSError):
        installed.append(("server", SERVER_SCRIPT.stat().st_mtime_ns))
    material = json.dumps(
        [sys.executable, sys.prefix, sys.path, env, installed, PRELOAD], sort_keys=True
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


class _Server:
    """The files of one server in the worker folder: its socket, lock, record (PID) and log."""

    def __init__(self, folder: Path, key: str):
        self.socket = folder / f"{key}.sock"
        self.lock = folder / f"{key}.lock"
        self.record = folder / f"{key}.json"
        self.log = folder / f"{key}.log"
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            msg = f"{DIR_ENV} folder path is too long for a socket ({len(str(self.socket))} bytes)"
            raise ResidentUnavailable(msg)

    def read_record(self) -> dict | None:
        try:
            record = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
            return None
        return record

    def running(self) -> dict | None:
        """The record of the server behind the socket, when it runs and the socket is its own."""
        from factory.services.processes import is_running

        record = self.read_record()
        if record is None or not is_running(record):
            return None
        try:
            st = self.socket.lstat()
        except OSError:
            return None
        if not stat.S_ISSOCK(st.st_mode) or st.st_ino != record.get("socket_inode"):
            return None
        return record

    def touch(self) -> None:
        """Tell the server it was used (its idle clock restarts)."""
        with contextlib.suppress(OSError):
            os.utime(self.socket)

    def start(self, idle_s: int, environ=None) -> dict:
        """Start a server on a new socket, in `environ` (default: this process's); its record.
        Called with the lock held."""
        from factory.services.processes import process_identity

        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # a server that is gone left it
        staging = self.socket.with_suffix(".new")
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        listener = socket.socket(socket.AF_UNIX)
        try:
            old_umask = os.umask(0o177)
            try:
                listener.bind(str(staging))
            finally:
                os.umask(old_umask)
            listener.listen(64)
            # In place before the server runs: the server knows its socket by this inode.
            os.replace(staging, self.socket)
            inode = self.socket.lstat().st_ino
            pid = self._spawn(listener, idle_s, environ)
        finally:
            listener.close()
        record = {
            **process_identity(pid),
            "argv": [sys.executable, str(SERVER_SCRIPT)],
            "socket_inode": inode,
        }
        tmp = self.record.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(self.record)
        return record

    def _spawn(self, listener: socket.socket, idle_s: int, environ) -> int:
        """Start the server script, which forks the server and leaves at once: the server is
        nobody's child here (no zombie, no process left to this command), and its PID comes back
        on a pipe."""
        pid_r, pid_w = os.pipe()
        try:
            argv = [
                sys.executable,
                "-P",  # not the script's own folder first on sys.path: no project module
                str(SERVER_SCRIPT),
                str(listener.fileno()),
                str(idle_s),
                str(self.socket),
                ",".join(PRELOAD),
                str(pid_w),
            ]
            with self.log.open("wb") as log, _started_or_unavailable(self.log):
                subprocess.run(
                    argv,
                    pass_fds=(listener.fileno(), pid_w),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # it outlives this command and its Ctrl-C
                    cwd=self.socket.parent,
                    env=None if environ is None else dict(environ),
                    timeout=SPAWN_TIMEOUT_S,
                    check=True,
                )
            os.close(pid_w)
            pid_w = -1
            with os.fdopen(pid_r, "rb", closefd=False) as pipe, _started_or_unavailable(self.log):
                return int(pipe.read(32).strip())
        finally:
            os.close(pid_r)
            if pid_w != -1:
                os.close(pid_w)


@contextlib.contextmanager
def _started_or_unavailable(log: Path):
    """The server script failed or hung: ResidentUnavailable, pointing at its log."""
    try:
        yield
    except (subprocess.SubprocessError, ValueError) as exc:
        msg = f"the resident worker server did not start ({type(exc).__name__}; see {log})"
        raise ResidentUnavailable(msg) from None


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_server(environ=None) -> Path:
    """The socket of this interpreter's running server, started now when none runs (it imports
    while the caller goes on: a worker asked for meanwhile waits for that import).
    ResidentTurnedOff when turned off, ResidentUnavailable when its folder cannot be used."""
    return ensure_server_started(environ)[0]


def ensure_server_started(environ=None) -> tuple[Path, bool]:
    """`ensure_server`, and whether this call started the server."""
    idle_s = idle_seconds(environ)
    if idle_s == 0:
        msg = f"{IDLE_ENV}=0"
        raise ResidentTurnedOff(msg)
    server = _Server(usable_dir(worker_dir(environ)), server_key(environ))
    started = False
    if server.running() is None:
        with _locked(server.lock):
            if server.running() is None:
                server.start(idle_s, environ)
                started = True
    server.touch()
    return server.socket, started


def _recorded_servers(environ) -> Iterator[tuple[_Server, dict]]:
    """Each server recorded in the worker folder, with its record (none when the folder is
    missing or cannot be trusted)."""
    folder = worker_dir(environ)
    try:
        usable_dir(folder, create=False)
    except ResidentUnavailable:
        return
    for record_file in sorted(folder.glob("*.json")):
        server = _Server(folder, record_file.stem)
        record = server.read_record()
        if record is not None:
            yield server, record


def stop_servers(environ=None, *, keep: frozenset[int] | set[int] = frozenset()) -> list[str]:
    """Stop every resident server recorded in the worker folder but those whose PID is in
    `keep` (by PID, checked against its start time); what was done, one line each."""
    from factory.services.processes import is_running, stop

    done = []
    for server, record in _recorded_servers(environ):
        if record["pid"] in keep:
            continue
        if is_running(record):
            how = stop({**record, "argv": record.get("argv") or ["resident worker server"]})
            done.append(f"stopped the resident worker server (pid {record['pid']}, {how})")
        with contextlib.suppress(OSError):
            if server.socket.lstat().st_ino == record.get("socket_inode"):  # not a newer one's
                server.socket.unlink()
        with contextlib.suppress(FileNotFoundError):
            server.record.unlink()
    return done


def running_servers(environ=None) -> list[dict]:
    """The records of the resident servers in the worker folder that run."""
    return [
        {**record, "socket": str(server.socket)}
        for server, _ in _recorded_servers(environ)
        if (record := server.running()) is not None
    ]


# -- the command's side of a fork request ----------------------------------------------------


class _ClientSide:
    """What a worker takes from the command that asked for it, applied as the worker reads its
    preparation data (before the project's modules are imported): environment, umask, output."""

    def __init__(self):
        self.environ = dict(os.environ)
        self.umask = _current_umask()

    def __reduce__(self):
        # Runs while the request is pickled (a spawning Popen is set): the two DupFd go with it.
        return (
            _adopt_client,
            (self.environ, self.umask, reduction.DupFd(1), reduction.DupFd(2)),
        )


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _adopt_client(environ: dict, umask: int, stdout, stderr) -> None:
    """In the new worker: the command's environment, umask and output, in place of the server's;
    and no signal handler of the server's left."""
    os.environ.clear()
    os.environ.update(environ)
    os.umask(umask)
    for target, inherited in ((1, stdout), (2, stderr)):
        fd = inherited.detach()
        if fd != target:
            os.dup2(fd, target)
            os.close(fd)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)


class _ResidentPopen(popen_forkserver.Popen):
    """A worker forked by the resident server (the standard fork-server request, to the address
    the process carries)."""

    def _launch(self, process_obj):
        prep_data = {
            "factory_client": _ClientSide(),
            **spawn.get_preparation_data(process_obj._name),
        }
        buf = io.BytesIO()
        mp_context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            mp_context.set_spawning_popen(None)
        address = process_obj.resident_address
        try:
            self.pid = self._request(address, buf.getbuffer())
        except (FileNotFoundError, ConnectionRefusedError, BrokenPipeError, EOFError):
            # The server left (idle, stopped, killed) after this command found it: another.
            process_obj.resident_address = str(ensure_server())
            self.pid = self._request(process_obj.resident_address, buf.getbuffer())

    def _request(self, address: str, data) -> int:
        """Send the request and the pickled process; the new worker's PID."""
        sentinel, w = _connect(address, self._fds)
        # As the standard Popen does: a duplicate of the data pipe's write end tells the worker
        # that this process still lives (its parent sentinel).
        parent_w = os.dup(w)
        try:
            with open(w, "wb", closefd=True) as f:
                f.write(data)
            pid = forkserver.read_signed(sentinel)
        except BaseException:
            util.close_fds(parent_w, sentinel)
            raise
        self.sentinel = sentinel
        self.finalizer = util.Finalize(self, util.close_fds, (parent_w, sentinel))
        return pid


def _connect(address: str, fds: list[int]) -> tuple[int, int]:
    """Ask the server for a worker (as `ForkServer.connect_to_new_process`); (status_r,
    data_w). The worker keeps an end of the server's pipe that we do not have: any fd serves."""
    if len(fds) + 4 >= forkserver.MAXFDS_TO_SEND:
        msg = "too many fds"
        raise ValueError(msg)
    placeholder = os.open(os.devnull, os.O_RDONLY)
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(address)
            parent_r, child_w = os.pipe()
            child_r, parent_w = os.pipe()
            allfds = [child_r, child_w, placeholder, resource_tracker.getfd(), *fds]
            try:
                reduction.sendfds(client, allfds)
                return parent_r, parent_w
            except BaseException:
                os.close(parent_r)
                os.close(parent_w)
                raise
            finally:
                os.close(child_r)
                os.close(child_w)
    finally:
        os.close(placeholder)


class _ResidentProcess(mp_context.ForkServerProcess):
    resident_address = ""

    @staticmethod
    def _Popen(process_obj):
        return _ResidentPopen(process_obj)


class _ResidentContext(mp_context.ForkServerContext):
    def __init__(self, address: Path):
        self.address = str(address)

    def Process(self, *args, **kwargs):
        process = _ResidentProcess(*args, **kwargs)
        process.resident_address = self.address
        return process


def resident_context(address: Path) -> mp_context.BaseContext:
    """A multiprocessing context whose processes are forked by the server at `address`."""
    return _ResidentContext(address)
