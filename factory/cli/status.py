"""`factory status`: queues per pool and recent build figures, as a table or JSON."""

import json

import click

from factory.errors import FactoryError
from factory.settings import Settings

DEFAULT_WINDOW_HOURS = 24 * 7
MAX_WINDOW_HOURS = 24 * 366 * 100  # a century; more would overflow the date arithmetic


def _finite_hours(ctx: click.Context, param: click.Parameter, value: float) -> float:
    # FloatRange lets NaN through (every comparison with NaN is false).
    if value != value:
        msg = f"{value} is not a number of hours"
        raise click.BadParameter(msg)
    return value


@click.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--window-hours",
    type=click.FloatRange(min=0, min_open=True, max=MAX_WINDOW_HOURS),
    callback=_finite_hours,
    default=DEFAULT_WINDOW_HOURS,
    show_default=True,
    help="Aggregate builds that finished within this many hours.",
)
def status_command(as_json: bool, window_hours: float) -> None:
    """Queue depth, oldest wait, running, throughput, retries and dead letters per pool; build
    success rate, p50/p95 build and test times and cache hit ratio per pool and platform.

    In Celery mode (FACTORY_EXECUTOR=celery or FACTORY_CELERY_BROKER set) also the live workers
    of each pool: busy or idle, seconds idle, tasks done and last heartbeat, asked through the
    broker with a short timeout.

    Reads the Dagster instance at DAGSTER_HOME and the records under FACTORY_DATA_DIR; it starts
    nothing, so it works while runs are going on.
    """
    # Dagster is imported here so that `factory --help` and the other commands stay fast.
    from datetime import timedelta

    from factory.records.index import finished_after
    from factory.records.selection import open_record_store
    from factory.workers.celery_inspect import workers_report
    from factory_assets.instance import open_instance, prepare_dagster_home
    from factory_assets.queue_metrics import format_status, status_report

    settings = Settings.from_env()
    try:
        prepare_dagster_home(settings, apply_limits=False)
        with open_instance() as instance:
            report = status_report(
                instance,
                open_record_store(settings).index.figures(
                    finished_after=finished_after(timedelta(hours=window_hours))
                ),
                settings.data_dir,
                window=timedelta(hours=window_hours),
            )
    except FactoryError as exc:
        raise click.ClickException(str(exc)) from None
    workers = workers_report()
    if workers is not None:
        report["workers"] = workers
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_status(report))
