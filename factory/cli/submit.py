"""`factory submit`: plan like `run`, then queue the runs in a Dagster deployment's run queue.

`run` executes combinations in its own processes; `submit` hands them to the deployment, so its
daemon, pools and priorities decide when and where they run, as for the UI, backfills and
sensors. Locally that is the instance at DAGSTER_HOME (with `make dev` or `dagster-daemon run`
serving it); with `--url` a webserver's GraphQL API. `--wait` follows the runs to the end: the CI
recipe is `factory submit --wait` (exit 0 when every run succeeded).
"""

import click

from factory.cli.common import fail, plan_options, plan_selected
from factory.errors import FactoryError

DEFAULT_WAIT_TIMEOUT_S = 6 * 3600


def _print_plan(items, todo) -> None:
    for i in items:
        if i.action != "run":
            click.echo(f"  skip     {i.manifest_id} {i.platform}: {','.join(i.reasons)}")
    if not todo:
        click.echo("nothing to submit: every combination has a record for its current keys")


@click.command(name="submit")
@plan_options(force_help="Submit (and rebuild) even combinations that passed.")
@click.option(
    "--url",
    default=None,
    help="A Dagster webserver (http://HOST:3000) to submit to through its GraphQL API; "
    "default: the local instance at DAGSTER_HOME.",
)
@click.option("--wait", is_flag=True, help="Follow the runs to the end; exit 1 if one failed.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1, max=7 * 86400),
    default=DEFAULT_WAIT_TIMEOUT_S,
    help="With --wait: give up (exit 1) after this many seconds.",
)
def submit_command(force, url, wait, timeout_s, **selection) -> None:
    """Queue what the plan says to run in the deployment's run queue; print the run ids.

    Each combination is one run of its platform's `build_<slug>` job for its partition, tagged
    with its pool, reasons and priority (high-priority manifests are dequeued first). The
    daemon of the deployment runs them within its pool limits: make sure one is running
    (`make dev`, or `dagster-daemon run -w workspace.yaml`).
    """
    from factory.plan.decisions import PlanItem
    from factory_assets.submit import SubmitError, parse_url

    if url:
        try:
            parse_url(url)  # before planning, which asks the registry
        except SubmitError as exc:
            raise fail(exc) from None
    settings, store, _, items = plan_selected(force=force, **selection)
    todo = sorted(
        (i for i in items if i.action == "run"),
        key=PlanItem.queue_order,
    )
    click.echo(f"store {settings.manifest_store}: {len(items)} combinations, {len(todo)} to run")
    _print_plan(items, todo)
    if not todo:
        return
    try:
        _submit(settings, store, todo, url=url, force=force, wait=wait, timeout_s=timeout_s)
    except SubmitError as exc:
        raise fail(exc) from None


def _submit(settings, store, todo, *, url, force, wait, timeout_s) -> None:
    import contextlib

    from factory.platforms import platform as lookup_platform
    from factory.settings import PROJECT_ROOT
    from factory_assets.jobs import build_job_name
    from factory_assets.submit import (
        add_partition,
        build_repository,
        local_deployment,
        queue_daemon_healthy,
        remote_deployment,
        submit_item,
    )

    with contextlib.ExitStack() as stack:
        if url:
            deployment = stack.enter_context(remote_deployment(url))
        else:
            from factory_assets.instance import (
                open_instance,
                prepare_dagster_home,
                sync_partitions,
            )

            try:
                prepare_dagster_home(settings)
            except FactoryError as exc:
                raise fail(exc) from None
            instance = stack.enter_context(open_instance())
            sync_partitions(instance, store)
            workspace = str(PROJECT_ROOT / "workspace.yaml")
            deployment = stack.enter_context(local_deployment(instance, workspace))
        click.echo(f"submitting to {deployment.shown}")
        selectors: dict[str, dict] = {}
        submitted = []
        for item in todo:
            job = build_job_name(lookup_platform(item.platform).slug)
            if job not in selectors:
                selectors[job] = build_repository(deployment, job)
            if url:
                add_partition(deployment, selectors[job], item)
            run_id = submit_item(deployment, selectors[job], item, force=force)
            submitted.append((item, run_id))
            click.echo(
                f"  queued   {run_id}  {item.manifest_id} {item.platform} "
                f"(pool {item.pool}, {','.join(item.reasons)})"
            )
        click.echo(f"{len(submitted)} runs queued")
        if not queue_daemon_healthy(deployment):
            click.echo(
                "warning: no healthy run-queue daemon answers for this instance; the runs wait "
                "until one runs (`make dev` or `dagster-daemon run -w workspace.yaml`)",
                err=True,
            )
        if wait:
            _wait(deployment, submitted, timeout_s)


def _wait(deployment, submitted, timeout_s: float) -> None:
    import dagster as dg

    from factory_assets.submit import follow

    by_run = {run_id: item for item, run_id in submitted}
    done = {"n": 0}

    def on_end(run_id: str, status) -> None:
        done["n"] += 1
        item = by_run[run_id]
        click.echo(
            f"[{done['n']}/{len(by_run)}] {status.value:8} {item.manifest_id} {item.platform} "
            f"(run {run_id})"
        )

    def on_wait(pending: int, seconds: float) -> None:
        click.echo(f"  waiting for {pending} runs ({seconds:.0f}s)")

    statuses = follow(deployment, list(by_run), timeout_s=timeout_s, on_end=on_end, on_wait=on_wait)
    unfinished = [r for r, s in statuses.items() if s not in (dg.DagsterRunStatus.SUCCESS,)]
    if unfinished:
        lines = [
            f"  {by_run[r].manifest_id} {by_run[r].platform}: {statuses[r].value} (run {r})"
            for r in unfinished
        ]
        msg = f"{len(unfinished)} of {len(by_run)} runs did not succeed:\n" + "\n".join(lines)
        raise click.ClickException(msg)
    click.echo(f"all {len(by_run)} runs succeeded")
