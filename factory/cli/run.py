"""`factory run`: plan, run what the plan says through Dagster, then print the matrix.

A run with nothing to do costs a plan: when no combination needs a run, the store's partitions are
already in the Dagster instance and no record arrived since the matrix assets last materialized
(factory/plan/run_state.py), it prints the plan and the matrix from the records index and starts
neither Dagster nor a worker.
"""

import contextlib
import os
from dataclasses import dataclass, field

import click

from factory.cli.common import fail, plan_for, plan_options, settings_for
from factory.errors import FactoryError
from factory.safe_json import exception_line


def _print_skips(items) -> None:
    for i in items:
        if i.action != "skip":
            continue
        why = ",".join(i.reasons)
        if "failed_backoff" in i.reasons:
            why += f" (next try {i.retry_at}; --retry-failed tries now)"
        click.echo(f"  skip     {i.manifest_id} {i.platform}: {why}")


def _nothing_to_run_line(items) -> str:
    waiting = sum(1 for i in items if "failed_backoff" in i.reasons)
    line = "nothing to run: every combination has a record for its current keys"
    if waiting:
        line += f" ({waiting} failed, waiting for their backoff)"
    return line


def _print_matrix_and_publish(store, index, items, *, published: bool, registry: str) -> None:
    from factory.registry.publish import publish_plan
    from factory.report.matrix import format_text, matrix_cells

    click.echo("")
    click.echo(format_text(matrix_cells(store, index, items)))
    click.echo("")
    for decision in publish_plan(store, index, items):
        if decision.ready and published:
            platforms = ", ".join(oci for _, oci in decision.index_entries())
            click.echo(
                f"published {registry}/factory/{decision.manifest_id}:"
                f"{decision.release_tag} and :latest ({platforms})"
            )
        else:
            click.echo(f"not published {decision.manifest_id}: {'; '.join(decision.reasons)}")


def _on_done_printer(watcher, total: int):
    done = {"n": 0}

    def on_done(item, outcome) -> None:
        done["n"] += 1
        record = watcher.record_of(outcome.run_id)
        if record is None:
            click.echo(
                f"[{done['n']}/{total}] NOT RECORDED {item.manifest_id} {item.platform}: "
                f"{outcome.message}",
                err=True,
            )
            return
        if record.error:
            detail = f"stage {record.error.stage}: {record.error.message}"
        else:
            built = (
                f"build {record.timings_s.get('build', 0):.1f}s "
                f"({record.cache.cached}/{record.cache.steps} steps cached)"
                if record.image is None or record.image.rebuilt
                else "image reused (same build key)"
            )
            detail = f"{built}, test {record.timings_s.get('test', 0):.1f}s"
        click.echo(
            f"[{done['n']}/{total}] {record.status:5} {item.manifest_id} {item.platform} "
            f"in {outcome.seconds:.1f}s: {detail} (run {outcome.run_id[:8]})"
        )

    return on_done


def _matrix_materialized(future) -> bool:
    try:
        return bool(future.result())
    except Exception:  # a worker that died: the caller warns
        return False


def _close_lost_runs(invocation: str) -> None:
    """After a lost worker: its runs are marked failed and their test containers removed, from
    a fresh worker."""
    from factory.workers.run_pool import close_lost_runs

    try:
        closed, removed = close_lost_runs(invocation)
    except Exception as exc:  # the instance's or a worker's: a warning, the run's result stands
        click.echo(
            "warning: the lost worker's runs could not be marked failed: "
            f"{exception_line(exc) or type(exc).__name__}",
            err=True,
        )
        return
    if closed:
        click.echo(f"marked {closed} run(s) the lost worker left unfinished as failed", err=True)
    if isinstance(removed, str):
        click.echo(f"warning: its test containers could not be removed: {removed}", err=True)
    elif removed:
        click.echo(f"removed {removed} test container(s) the lost worker left", err=True)


def _on_start(item) -> None:
    what = "build" if item.rebuild else "re-test"
    click.echo(f"  queued   {item.manifest_id} {item.platform} ({what}: {','.join(item.reasons)})")


@click.command(name="run")
@plan_options(force_help="Re-run and rebuild even combinations that passed.")
@click.option(
    "--parallel",
    type=click.IntRange(1, 32),
    default=2,
    show_default=True,
    help="Combinations built at the same time.",
)
def run_command(manifest_store, manifest_ids, platforms, force, retry_failed, parallel) -> None:
    """The main job: build, test and record what the plan says; print the matrix.

    A combination runs when it has no record for its current keys, or when its newest record
    failed and its backoff is over (1 h, doubling up to 32 h; `--retry-failed` tries now). Runs go
    through the Dagster instance at DAGSTER_HOME (default .factory/dagster), so they show up in
    `dagster dev -w workspace.yaml`. With nothing to run, nothing is started: the plan and the
    matrix are printed from the records. Exits 0 when every attempted combination got a record
    (pass or fail), 1 when one could not be recorded.
    """
    from factory.plan.run_state import RunState, combinations_fingerprint
    from factory.services.embedded import docker_host
    from factory.store.load import load_store
    from factory.workers.resident import idle_seconds

    settings = settings_for(manifest_store)
    # The runs execute in worker processes that load the code location from the environment.
    os.environ["FACTORY_MANIFEST_STORE"] = str(settings.manifest_store)
    try:
        idle_seconds()  # the resident worker server's setting, checked before anything runs
        store = load_store(settings.manifest_store)
        # One engine for the plan and every run of this invocation, found once: each run's step
        # would otherwise look for it again (the default socket, then the project's own).
        os.environ["DOCKER_HOST"] = docker_host(settings)
    except FactoryError as exc:
        raise fail(exc) from None
    run = _Run(
        settings=settings,
        store=store,
        state=RunState(settings.data_dir, settings.dagster_home),
        partitions=combinations_fingerprint([(m, p.name) for m, p in store.combinations()]),
        force=force,
        parallel=parallel,
    )
    run.go(manifest_ids=manifest_ids, platforms=platforms, retry_failed=retry_failed)


@dataclass
class _Run:
    """One `factory run`: the plan, then either nothing or the Dagster part, all of which
    happens in the workers (factory_assets/launcher.py)."""

    settings: object
    store: object
    state: object
    partitions: str
    force: bool
    parallel: int
    items: list = field(default_factory=list)
    digests: dict = field(default_factory=dict)
    records: object = None

    @property
    def todo(self) -> list:
        return [i for i in self.items if i.action == "run"]

    def go(self, **selection) -> None:
        with contextlib.ExitStack() as stack:
            workers = None
            if not self.state.partitions_synced(self.partitions):
                # The store's partitions must reach the instance whatever the plan says, so
                # Dagster is needed: the workers start now and set the instance up while the
                # plan is made.
                workers = stack.enter_context(self._workers(len(self.store.combinations())))
            generation = self._plan(**selection)
            if workers is None and not self.todo and self.state.matrix_current(generation):
                self._nothing_to_do()
                return
            signing = self._signing()
            if workers is None:
                workers = stack.enter_context(self._workers(len(self.todo)))
            self._through_dagster(workers, signing)

    def _workers(self, wanted: int):
        from factory.services.dagster_home import write_instance_config
        from factory.workers.run_pool import Workers

        # The workers (and their runs) find the instance here, and open it as they start.
        write_instance_config(self.settings.dagster_home)
        sync = not self.state.partitions_synced(self.partitions)
        return Workers(min(self.parallel, max(1, wanted)), first=("prepare_instance", sync))

    def _plan(self, *, manifest_ids, platforms, retry_failed) -> list:
        """Plan; return the records index generation."""
        from factory.plan.decisions import resolve_base_digests
        from factory.records.selection import open_record_store

        try:
            self.digests = resolve_base_digests(self.store, self.store.combinations())
            self.records = open_record_store(self.settings)
            _, _, self.items = plan_for(
                self.settings,
                manifest_ids=manifest_ids,
                platforms=platforms,
                force=self.force,
                retry_failed=retry_failed,
                base_digests=self.digests,
                store=self.store,
                records=self.records,
            )
            return self.records.index.generation()
        except (FactoryError, KeyError) as exc:
            raise fail(exc) from None

    def _full_plan(self):
        try:
            _, index, items = plan_for(
                self.settings,
                manifest_ids=(),
                platforms=(),
                force=False,
                base_digests=self.digests,
                store=self.store,
                records=self.records,
            )
        except (FactoryError, KeyError) as exc:
            raise fail(exc) from None
        return index, items

    def _nothing_to_do(self) -> None:
        click.echo(f"store {self.settings.manifest_store}: {len(self.items)} combinations")
        _print_skips(self.items)
        click.echo(_nothing_to_run_line(self.items) + "; the matrix is current, no run started")
        index, items = self._full_plan()
        _print_matrix_and_publish(
            self.store, index, items, published=True, registry=self.settings.registry
        )

    def _signing(self) -> str | None:
        if not self.todo:
            return None
        from factory.supply_chain.signing_keys import signing_summary

        try:
            return signing_summary()  # an unusable key stops the run before any run starts
        except FactoryError as exc:
            raise fail(exc) from None

    def _through_dagster(self, workers, signing: str | None) -> None:
        from factory.records.store import RecordWatcher

        try:
            home, added, removed = workers.result(workers.prepared)
        except FactoryError as exc:
            raise fail(exc) from None
        self.state.record_partitions(self.partitions)
        click.echo(
            f"store {self.settings.manifest_store}: {len(self.items)} combinations "
            f"(partitions +{added} -{removed}); Dagster instance {home}"
        )
        _print_skips(self.items)
        if signing:
            click.echo(signing)  # said once per run, not once per build
        todo, state, records = self.todo, self.state, self.records
        watcher = RecordWatcher(records)
        outcomes = []
        matrix = None  # the matrix assets, materializing in a worker
        if todo:
            from factory.workers.run_pool import new_invocation

            invocation = new_invocation()
            outcomes = workers.run(
                todo,
                force_rebuild=self.force,
                invocation=invocation,
                on_start=_on_start,
                on_done=_on_done_printer(watcher, len(todo)),
            )
            if workers.lost:
                _close_lost_runs(invocation)
            matrix = workers.submit("materialize_matrix")
        else:
            click.echo(_nothing_to_run_line(self.items))
        try:
            records.index.refresh()  # the runs wrote records: look again
            generation = records.index.generation()
        except FactoryError as exc:
            raise fail(exc) from None
        if matrix is None and not state.matrix_current(generation):
            matrix = workers.submit("materialize_matrix")
        # The final plan is made while the matrix assets materialize.
        index, items = self._full_plan()
        matrix_ok = True
        if matrix is not None:
            matrix_ok = _matrix_materialized(matrix)
            if matrix_ok:
                state.record_matrix(generation)
            else:
                click.echo(
                    "warning: the compatibility_matrix / multiarch_index assets did not "
                    "materialize; see the compatibility_matrix_job run in the UI",
                    err=True,
                )
        _print_matrix_and_publish(
            self.store, index, items, published=matrix_ok, registry=self.settings.registry
        )
        unrecorded = [o for o in outcomes if watcher.record_of(o.run_id) is None]
        if unrecorded:
            msg = (
                f"{len(unrecorded)} combination(s) could not be recorded; see the messages above "
                "and the runs in `dagster dev -w workspace.yaml`"
            )
            raise click.ClickException(msg)
