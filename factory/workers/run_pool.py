"""`factory run`'s worker processes, started and fed without importing Dagster here.

The workers start as soon as the run knows there is work; each imports the code location and
opens the instance once while the plan is still being made (factory_assets/launcher.py says what
they do), and every Dagster call of the run (instance set-up, the combinations, the matrix) then
happens in a warm worker. Tasks are named, not passed as functions: pickling a function of
factory_assets would import it, and Dagster with it (about 0.9 s), into the `factory` process.
"""

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from factory.plan.decisions import PlanItem

# What a worker can be asked to do: functions of factory_assets.launcher.
TASKS = frozenset({"prepare_instance", "run_combination", "materialize_matrix"})


@dataclass(frozen=True)
class RunOutcome:
    """How one combination's run ended, as the worker saw it."""

    manifest_id: str
    platform: str
    run_id: str | None
    success: bool
    message: str
    seconds: float


def _start_worker() -> None:
    from factory_assets.launcher import load_code_location

    load_code_location()


def _started() -> None:
    """A no-op task: submitting one per worker starts them all at once."""


def _task(name: str, *args):
    from factory_assets import launcher

    return getattr(launcher, name)(*args)


class Workers:
    """A pool of `parallel` worker processes (spawned: nothing of this process is inherited)."""

    def __init__(self, parallel: int):
        self.count = max(1, parallel)
        self.prepared: Future | None = None  # the instance set-up, when the caller submits it
        self.pool = ProcessPoolExecutor(
            max_workers=self.count,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
        )
        for _ in range(self.count):
            self.pool.submit(_started)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc_info) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, task: str, *args) -> Future:
        """Start the named task (one of TASKS) in a worker."""
        if task not in TASKS:
            msg = f"unknown worker task {task!r}"
            raise ValueError(msg)
        return self.pool.submit(_task, task, *args)

    def run(
        self,
        items: list[PlanItem],
        *,
        force_rebuild: bool,
        on_start: Callable[[PlanItem], None],
        on_done: Callable[[PlanItem, RunOutcome], None],
    ) -> list[RunOutcome]:
        """Run the items, high priority first; each outcome is handed to `on_done` as it comes."""
        futures = {}
        for item in sorted(items, key=PlanItem.queue_order):
            futures[self.submit("run_combination", item, force_rebuild)] = item
            on_start(item)
        outcomes = []
        for future in as_completed(futures):
            item = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # a worker that died: report, keep the others going
                outcome = RunOutcome(
                    item.manifest_id, item.platform, None, False, f"worker failed: {exc}", 0.0
                )
            outcomes.append(outcome)
            on_done(item, outcome)
        return outcomes


def run_items(
    items: list[PlanItem],
    *,
    parallel: int,
    force_rebuild: bool,
    on_start: Callable[[PlanItem], None],
    on_done: Callable[[PlanItem, RunOutcome], None],
) -> list[RunOutcome]:
    """Run the items `parallel` at a time in fresh workers."""
    with Workers(min(parallel, max(1, len(items)))) as workers:
        return workers.run(items, force_rebuild=force_rebuild, on_start=on_start, on_done=on_done)
