"""A combination's step dies with the process that coordinates it.

Dagster's multiprocess executor runs each step in a child of the run worker. If the worker is
lost (killed, OOM), the run is failed and retried, but a child left running would go on to write
a record of its own beside the retry's, and a combination would end with two. Since one step now
carries the whole chain, record included, the step asks the kernel to kill it when its parent
dies (Linux `PR_SET_PDEATHSIG`), so a lost worker takes its unfinished build with it and the retry
writes the only record. A process forked by a fork server has the server as its kernel parent; it
watches the process that asked for it instead.

Only processes started by `multiprocessing` (executor step children, `factory run`'s workers,
spawned or forked from a fork server) are guarded: a run that executes in its own process (the
in-process executor, a Kubernetes pod, a Celery task) has no coordinator above it to outlive.
"""

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1

_WATCHER = "die-with-coordinator"


def die_with_parent() -> bool:
    """Guard this process if it is a `multiprocessing` child; True when guarded.

    Exits at once when the parent is already gone: nobody is waiting for this step's result.
    """
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):  # no prctl in this libc: run unguarded
        return False
    # The signal is only armed for a parent that dies from now on: one that died before the call
    # is seen through its sentinel (a pipe that ends with it).
    if not parent.is_alive():
        os._exit(1)
    if os.getppid() != parent.pid:
        # Forked by a fork server (`factory run`'s workers, a multiprocess executor set to
        # "forkserver"): the kernel's parent is the server, which outlives the process that
        # asked for this one as long as any of its children lives. The sentinel says when that
        # process is gone.
        _watch(parent)
    return True


def _watch(parent: multiprocessing.process.BaseProcess) -> None:
    """Kill this process when `parent` ends: a thread that waits on the parent's sentinel (one
    per process, whatever the number of steps it runs)."""
    if any(t.name == _WATCHER for t in threading.enumerate()):
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name=_WATCHER, daemon=True).start()
