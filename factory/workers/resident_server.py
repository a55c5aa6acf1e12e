"""The resident worker server: a fork server that outlives the `factory` command that started it.

    python -P resident_server.py LISTENER_FD IDLE_S SOCKET_PATH MODULE[,MODULE...] PID_FD

Started by factory/workers/resident.py (never by hand): this script forks the server, tells its
PID on PID_FD and leaves. Run by path, so that it imports nothing of the project, the server
imports the third-party modules named (Dagster, SQLAlchemy, the Docker SDK, pandas...), then
serves fork requests on the listening socket it was handed, with the standard
library's fork-server loop (`multiprocessing.forkserver.main`) and its protocol. Each worker it
forks is a `factory run` worker: the command that asked for it sends its environment, working
directory, `sys.path` and output with the request, and the worker imports the project's own
modules itself, so nothing of one command's settings or code is seen by another.

It leaves once it has been idle for IDLE_S seconds (no command touched SOCKET_PATH in that time):
it removes the socket, so that a new command starts a new server, and ends when its last worker
has. A SIGTERM ends it at once (`factory services down`).
"""

import contextlib
import json
import os
import signal
import sys
import time
from multiprocessing import forkserver

# How often, at most, the idle check runs.
CHECK_EVERY_S = 10.0


def _preload(modules: list[str]) -> None:
    """Import what the workers will need. A module that fails to import is left for the worker
    that needs it to report: this process has no one to tell."""
    for name in modules:
        with contextlib.suppress(Exception):
            __import__(name)


def _socket_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _IdleWatch:
    """Checks, on a timer signal, whether any command has used the socket lately.

    A timer signal rather than a thread: the server forks its workers, and a fork taken while
    another thread holds a lock would leave that lock held in the worker for good.
    """

    def __init__(self, socket_path: str, idle_s: float, alive_w: int):
        self.socket_path = socket_path
        self.identity = _socket_identity(socket_path)
        self.idle_s = idle_s
        self.alive_w = alive_w

    def start(self) -> None:
        signal.signal(signal.SIGALRM, self._check)
        every = min(CHECK_EVERY_S, max(0.5, self.idle_s / 4))
        signal.setitimer(signal.ITIMER_REAL, every, every)

    def _check(self, *_unused) -> None:
        if _socket_identity(self.socket_path) != self.identity:
            # Removed (`factory services down`, a cleaned /tmp) or taken over by another server.
            self._leave(unlink=False)
            return
        with contextlib.suppress(OSError):
            used = os.stat(self.socket_path).st_mtime
            if time.time() - used >= self.idle_s:
                self._leave(unlink=True)

    def _leave(self, *, unlink: bool) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        if unlink:
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)
            self._forget()
        # The fork-server loop leaves when the other end of this pipe is closed everywhere: here,
        # and in every worker forked while it was open (a worker that is still running a task
        # keeps the server, and its exit-status reports, until it ends).
        with contextlib.suppress(OSError):
            os.close(self.alive_w)

    def _forget(self) -> None:
        """Remove the server's record (beside its socket, `<key>.json`) when it is this one's."""
        record = os.path.splitext(self.socket_path)[0] + ".json"
        with contextlib.suppress(OSError, ValueError, AttributeError):
            with open(record) as handle:
                if json.load(handle).get("pid") == os.getpid():
                    os.unlink(record)


def _detach(pid_fd: int) -> None:
    """Fork the server and leave: the command that started this script waits for this process
    only, and reads the server's PID from `pid_fd`."""
    pid = os.fork()
    if pid:
        os.write(pid_fd, f"{pid}\n".encode())
        os._exit(0)
    os.close(pid_fd)


def main(argv: list[str]) -> int:
    listener_fd, idle_s, socket_path, modules, pid_fd = argv
    _detach(int(pid_fd))
    _preload([m for m in modules.split(",") if m])
    alive_r, alive_w = os.pipe()
    _IdleWatch(socket_path, float(idle_s), alive_w).start()
    try:
        forkserver.main(int(listener_fd), alive_r, preload=[])
    except SystemExit:
        pass
    # Nothing here needs an interpreter teardown (about 0.5 s with Dagster imported).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
