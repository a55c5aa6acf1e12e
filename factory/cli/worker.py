"""`factory worker --pool POOL`: a Celery worker for one pool (several-hosts shape)."""

import click

from factory.errors import FactoryError
from factory.workers.celery_settings import POOLS


@click.command(name="worker")
@click.option(
    "--pool",
    required=True,
    type=click.Choice(POOLS),
    help="The pool (and Celery queue) this worker takes steps from.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=1,
    help="Steps (combinations) this worker runs at the same time.",
)
@click.option(
    "--max-idle",
    "max_idle_s",
    type=click.FloatRange(min=0, min_open=True),
    help="Exit (status 0) after this many seconds without a task: an ephemeral executor.",
)
@click.option("--docker-host", help="This worker's Docker Engine (default: $DOCKER_HOST).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="This worker's own data dir for staged files (default: $FACTORY_DATA_DIR).",
)
@click.option("--name", help="Celery node name NAME[@HOST] (default: the pool's name @ this host).")
@click.option("--loglevel", default="INFO", help="Celery's log level for the worker.")
def worker_command(**flags) -> None:
    """Run a Celery worker that executes the steps of one pool's queue.

    It takes each combination's one step from the broker (FACTORY_CELERY_BROKER, default
    redis://127.0.0.1:6379/0), builds and tests on its own engine (--docker-host) with its own data
    dir (--data-dir), and writes the record to the shared record store (S3 when FACTORY_S3_BUCKET
    is set). Launch runs with `FACTORY_EXECUTOR=celery factory run`. Stop it with Ctrl-C or
    SIGTERM (warm shutdown); a killed worker's task goes to another worker of the pool.
    """
    from factory.workers.celery_worker import preflight, run_worker, validate_options

    try:
        options = validate_options(**flags)
        engine_id = preflight(options)
    except FactoryError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"factory worker {options.node_name}: pool {options.pool}, engine {options.docker_host} "
        f"({engine_id or 'unknown id'}), data dir {options.data_dir}, broker {options.broker}"
        + (f", exits after {options.max_idle_s:g} s idle" if options.max_idle_s else ""),
        err=True,
    )
    code = run_worker(options, engine_id)
    if code:
        raise SystemExit(code)
