"""What `factory run`'s fork server does before it forks the workers (factory/workers/run_pool.py).

A fork server can only be told to import modules, so this one's import is its work: it opens the
instance at DAGSTER_HOME once, in the server, and every worker forked afterwards starts with it
open. Opening it per worker cost each about 0.3 s, taken in turns under the first-open lock.
The server also makes the template of a new run's database, then closes every database
connection (factory_assets/sqlite_storage.py): the workers inherit an open instance, its template
and no connection (an opened instance starts no thread).

The server ends when the `factory` process does, after its output; it then leaves at once, without
tearing down an interpreter that holds Dagster and the code location (about 0.6 s, which a caller
reading the run's output waited for: the server holds that output open until it ends).

A failure is left for the workers to meet: the first task that needs the instance opens it again
and says what is wrong (an exception here would take the server down, and every worker with it).
"""

import atexit
import contextlib

from factory_assets import launcher
from factory_assets.sqlite_storage import prepare_for_fork

atexit.register(launcher.leave_without_teardown)
with contextlib.suppress(Exception):
    prepare_for_fork(launcher.worker_instance())
