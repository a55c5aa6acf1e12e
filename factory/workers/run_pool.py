"""`factory run`'s worker processes, started and fed without importing Dagster here.

The workers start as soon as the run knows there is work, while the plan is still being made, and
every Dagster call of the run (instance set-up, the combinations, the matrix) happens in a warm
worker (factory_assets/launcher.py says what they do). Tasks are named, not passed as functions:
pickling a function of factory_assets would import it, and Dagster with it (about 0.9 s), into the
`factory` process.

The workers are forked from the resident worker server (factory/workers/resident.py), which
imported Dagster and the other third-party modules once, for every command: importing them costs
2 to 3 CPU-seconds, and a `factory run` is bound by CPU (its workers, the engine and BuildKit
share the host's cores). Each worker then loads the project's code location and opens the
instance itself (0.5 s, the workers in parallel). When no resident server can be used
(FACTORY_WORKER_IDLE_S=0, an unusable folder) the command starts a fork server of its own, which
imports the whole code location and opens the instance before it forks
(factory_assets/worker_start.py).

Starting a worker waits for the fork server's answer, and the server answers only once its import
is done (1 to 1.6 s). A thread therefore starts the workers and submits their first task, so the
caller makes its plan meanwhile instead of after that import.
"""

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from factory.errors import FactoryError
from factory.plan.decisions import PlanItem
from factory.safe_json import exception_line

# What a worker can be asked to do: functions of factory_assets.launcher.
TASKS = frozenset({"prepare_instance", "run_combination", "materialize_matrix", "close_lost_runs"})

# What the fork server imports before it forks a worker: a module that loads the code location
# and opens the instance, and never raises (factory_assets/worker_start.py). A module named here
# that raised would take the server down with a traceback, before any worker could say why.
PRELOAD = ("factory_assets.worker_start",)

# The environment this module last started the fork server with (None: it has not).
_server_environment: dict[str, str] | None = None


def worker_context() -> multiprocessing.context.BaseContext:
    """The fork-server context, its server started with this process's environment.

    The server reads the environment once, as it imports the code location (which picks its
    executor, record store and schedules from it), and its workers inherit that. One `factory
    run` sets its environment before it starts workers; a process that starts workers again
    after changing its environment gets a new server rather than workers from the old one.
    """
    global _server_environment
    environment = dict(os.environ)
    if environment != _server_environment:
        # Another environment, or a server this module did not start (other preloads): stop it
        # (a no-op when none runs); the next worker starts one from here.
        multiprocessing.forkserver._forkserver._stop()
    _server_environment = environment
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


class WorkersLost(FactoryError):
    """A worker process ended in the middle of a task (killed, out of memory, crashed): the pool
    cannot go on, and no task that was waiting will run."""


@dataclass(frozen=True)
class RunOutcome:
    """How one combination's run ended, as the worker saw it."""

    manifest_id: str
    platform: str
    run_id: str | None
    success: bool
    message: str
    seconds: float


class CodeLocationError(FactoryError):
    """The code location cannot be loaded in a worker (a setting it reads at import, a module
    that fails to import)."""


def _launcher():
    """factory_assets.launcher with the code location loaded; CodeLocationError, which the
    `factory` process prints as one line, when it cannot be."""
    try:
        from factory_assets import launcher

        launcher.load_code_location()
    except FactoryError:
        raise
    except Exception as exc:
        msg = (
            "the code location (factory_assets) cannot be loaded: "
            f"{type(exc).__name__}: {exception_line(exc)}"
        )
        raise CodeLocationError(msg) from None
    return launcher


def _start_worker() -> None:
    # An initializer that raises breaks the pool without a word; the worker's first task meets
    # the same trouble and reports it.
    with contextlib.suppress(Exception):
        _launcher()


def _started() -> None:
    """A no-op task: submitting one per worker starts them all at once."""


# Whether this worker is inside a task (see _interrupted).
_IN_TASK = False


def _task(name: str, *args):
    global _IN_TASK
    _IN_TASK = True
    try:
        return getattr(_launcher(), name)(*args)
    finally:
        _IN_TASK = False


def _interrupted(signum, frame) -> None:
    """SIGINT in a resident server's worker (sent by its command on Ctrl-C, see
    `Workers.interrupt`): inside a task, the KeyboardInterrupt a Ctrl-C gives (Dagster ends the
    run as interrupted); between tasks, a quiet exit rather than a traceback."""
    if _IN_TASK:
        raise KeyboardInterrupt
    raise SystemExit(130)


def _start_resident_worker() -> None:
    """A resident server's worker has the command's environment by now, and nothing of the
    project: it loads the code location and opens the instance itself (a per-command server did
    both before it forked)."""
    from factory.build.step_guard import die_with_parent

    # Its kernel parent is the server, which stays: it watches the command that asked for it,
    # and ends with it, whatever it is doing.
    die_with_parent()
    signal.signal(signal.SIGINT, _interrupted)
    with contextlib.suppress(Exception):
        _launcher().start_worker()


def _pool_context() -> tuple[multiprocessing.context.BaseContext, Callable[[], None]]:
    """The resident server's context when one can serve this command, else a fork server of
    this command's own (said once, on stderr, when the resident one cannot be used)."""
    from factory.workers.resident import ResidentTurnedOff, ensure_server, resident_context

    try:
        return resident_context(ensure_server()), _start_resident_worker
    except ResidentTurnedOff:
        pass
    except FactoryError as exc:  # an unusable folder; a bad setting (`factory run` checks first)
        _warn_once(f"warning: the workers start with this command: {exc}")
    except OSError as exc:  # the folder, the socket, the server's start
        _warn_once(f"warning: the resident worker server cannot start: {exception_line(exc)}")
    return worker_context(), _start_worker


_WARNED: set[str] = set()


def _warn_once(line: str) -> None:
    if line not in _WARNED:
        _WARNED.add(line)
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class Workers:
    """A pool of `parallel` worker processes, forked from the resident worker server
    (factory/workers/resident.py) or from a fork server of this command's own: nothing of this
    process is inherited but its environment (and, from the resident server, its output, umask,
    working directory and `sys.path`). `first` is a task (name and arguments) submitted as the
    workers start; its future is `prepared`."""

    def __init__(self, parallel: int, *, first: tuple | None = None):
        self.count = max(1, parallel)
        if first is not None:
            _check_task(first[0])
        context, initializer = _pool_context()
        self.pool = ProcessPoolExecutor(
            max_workers=self.count,
            mp_context=context,
            initializer=initializer,
        )
        self.lost = False  # whether a worker ended in the middle of a task
        self._first: Future | None = None
        self._start_error: BaseException | None = None
        self._starting = threading.Thread(
            target=self._start, args=(first,), name="factory-workers-start", daemon=True
        )
        self._starting.start()

    def _start(self, first: tuple | None) -> None:
        try:
            if first is not None:
                self._first = self.submit(*first)
            # One no-op task per worker starts them all at once.
            for _ in range(self.count - (first is not None)):
                self.pool.submit(_started)
        except OSError as exc:  # no worker could be started (the resident server's socket)
            self._start_error = _lost(exc)
        except BaseException as exc:  # reported by `prepared`, or by the next task
            self._start_error = exc

    @property
    def prepared(self) -> Future:
        """The future of the first task, once the workers have been started."""
        self._starting.join()
        if self._start_error is not None:
            return _failed(self._start_error)
        if self._first is None:
            msg = "the workers were started without a first task"
            raise RuntimeError(msg)
        return self._first

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, exc_type, *_) -> None:
        self._starting.join()
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            # Ctrl-C: the workers' runs are stopped as a Ctrl-C stops them. A resident server's
            # workers are not in this terminal's process group, so they would not get it, and
            # the pool would wait here for their runs to end.
            self.interrupt()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def interrupt(self) -> None:
        """SIGINT to every worker of the pool."""
        for pid in list(self.pool._processes or {}):  # pid -> process, the pool's own map
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGINT)

    def submit(self, task: str, *args) -> Future:
        """Start the named task (one of TASKS) in a worker. Once a worker is lost, the future
        holds WorkersLost rather than the call raising."""
        _check_task(task)
        try:
            return self.pool.submit(_task, task, *args)
        except (BrokenProcessPool, OSError) as exc:  # OSError: the resident server's socket
            return _failed(_lost(exc))

    def result(self, future: Future):
        """The task's result; WorkersLost (a FactoryError) when its worker was lost."""
        try:
            return future.result()
        except (BrokenProcessPool, WorkersLost) as exc:
            self.lost = True
            raise _lost(exc) from None

    def run(
        self,
        items: list[PlanItem],
        *,
        force_rebuild: bool,
        invocation: str,
        on_start: Callable[[PlanItem], None],
        on_done: Callable[[PlanItem, RunOutcome], None],
    ) -> list[RunOutcome]:
        """Run the items, high priority first; each outcome is handed to `on_done` as it comes.
        Each run is tagged with `invocation` (what `close_lost_runs` finds them by)."""
        futures = {}
        for item in sorted(items, key=PlanItem.queue_order):
            futures[self.submit("run_combination", item, force_rebuild, invocation)] = item
            on_start(item)
        outcomes = []
        for future in as_completed(futures):
            item = futures[future]
            try:
                outcome = self.result(future)
            except Exception as exc:  # a worker that died: report, keep the others going
                outcome = RunOutcome(
                    item.manifest_id, item.platform, None, False, f"worker failed: {exc}", 0.0
                )
            outcomes.append(outcome)
            on_done(item, outcome)
        return outcomes


def _check_task(name: str) -> None:
    if name not in TASKS:
        msg = f"unknown worker task {name!r}"
        raise ValueError(msg)


def _failed(exc: BaseException) -> Future:
    """A future that already holds `exc`."""
    future: Future = Future()
    future.set_exception(exc)
    return future


def _lost(exc: BaseException) -> WorkersLost:
    if isinstance(exc, WorkersLost):
        return exc
    if isinstance(exc, OSError):  # the worker was never started
        msg = f"no worker process of `factory run` could be started: {exception_line(exc)}"
        return WorkersLost(msg)
    return WorkersLost(f"a worker process of `factory run` ended unexpectedly ({exc})")


def new_invocation() -> str:
    """An id for one command's runs (their `factory/invocation` tag)."""
    return uuid.uuid4().hex


def close_lost_runs(invocation: str) -> tuple[int, int | str]:
    """In a fresh worker: mark the runs of `invocation` that a lost worker left unfinished as
    failed (a run whose process is gone stays STARTED otherwise, in the UI and for the daemon's
    queue) and remove their test containers. Returns (runs marked, containers removed or why
    they could not be)."""
    with Workers(1) as workers:
        return workers.result(workers.submit("close_lost_runs", invocation))


def run_items(
    items: list[PlanItem],
    *,
    parallel: int,
    force_rebuild: bool,
    on_start: Callable[[PlanItem], None],
    on_done: Callable[[PlanItem, RunOutcome], None],
) -> list[RunOutcome]:
    """Run the items `parallel` at a time in fresh workers."""
    invocation = new_invocation()
    with Workers(min(parallel, max(1, len(items)))) as workers:
        outcomes = workers.run(
            items,
            force_rebuild=force_rebuild,
            invocation=invocation,
            on_start=on_start,
            on_done=on_done,
        )
        lost = workers.lost
    if lost:
        # Best effort: each outcome already says its worker was lost.
        with contextlib.suppress(Exception):
            close_lost_runs(invocation)
    return outcomes
