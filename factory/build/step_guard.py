"""A combination's step dies with the process that coordinates it.

Dagster's multiprocess executor runs each step in a child of the run worker. If the worker is
lost (killed, OOM), the run is failed and retried, but a child left running would go on to write
a record of its own beside the retry's, and a combination would end with two. Since one step now
carries the whole chain, record included, the step asks the kernel to kill it when its parent
dies (Linux `PR_SET_PDEATHSIG`), so a lost worker takes its unfinished build with it and the retry
writes the only record.

Only processes started by `multiprocessing` (executor step children, `factory run`'s workers)
are guarded: a run that executes in its own process (the in-process executor, a Kubernetes pod, a
Celery task) has no coordinator above it to outlive.
"""

import ctypes
import multiprocessing
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


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
    # The signal is only armed for a parent that dies from now on; one that died before the call
    # left this process adopted by another.
    if parent.pid is not None and os.getppid() != parent.pid:
        os._exit(1)
    return True
