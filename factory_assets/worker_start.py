"""What a `factory run`'s own fork server does before it forks the workers, when the resident
worker server is not used (factory/workers/run_pool.py, factory/workers/resident.py).

A fork server can only be told to import modules, so this one's import is its work: it loads the
code location and opens the instance at DAGSTER_HOME once, in the server, and every worker forked
afterwards starts with both. Opening the instance per worker cost each about 0.3 s, taken in
turns under the first-open lock. The server also makes the template of a new run's database,
then closes every database connection (factory_assets/sqlite_storage.py): the workers inherit an
open instance, its template and no connection (an opened instance starts no thread).

This import never raises: an exception here would take the server down, with a traceback and
before any worker could say why. Whatever goes wrong is left for the workers to meet: each loads
the code location again in its first task, and reports what is wrong as one message.

The server ends when the `factory` process does, after its output; it then leaves at once,
without tearing down an interpreter that holds Dagster and the code location (about 0.6 s, which
a caller reading the run's output waited for: the server holds that output open until it ends).
"""

import atexit
import contextlib
import logging
import os
import sys


def _leave_without_teardown() -> None:
    """The server's last act: nothing in it needs a teardown (records and runs are committed as
    they happen). Output is flushed, logging shut down, and the process ends at once."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


atexit.register(_leave_without_teardown)
# Reported by the workers, see above.
with contextlib.suppress(Exception):
    import dagster._core.execution.execute_in_process  # noqa: F401  (what each run executes)

    from factory_assets import launcher

    launcher.start_worker()
