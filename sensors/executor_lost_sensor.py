"""Executor lost: a build run that failed with no step failure, because its worker died.

A run whose worker process, pod or host goes away mid-build is failed by Dagster (the code
server's orphan check locally, run monitoring on Kubernetes) without any step failing; run retries
may then launch it again. The alert is for the loss itself, so it is sent for every such run,
retried or not, once: a run fails once.
"""

import dagster as dg

from factory.report.alerts import send
from factory_assets.alerts import alert_interval_s, alert_settings, executor_lost_alert
from sensors.dead_letter_sensor import is_build_run


@dg.run_failure_sensor(
    name="executor_lost_sensor",
    monitor_all_code_locations=True,
    minimum_interval_seconds=alert_interval_s(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (FACTORY_ALERT_WEBHOOK_URL) when a build run loses its executor mid-run.",
)
def executor_lost_sensor(context: dg.RunFailureSensorContext) -> None:
    settings = alert_settings(context.log.warning)
    if settings is None:
        return
    run = context.dagster_run
    failures = list(context.get_step_failure_events())
    if failures or not is_build_run(run, failures):
        return  # a step failed: a recorded result or a dead letter, not a lost executor
    send(
        executor_lost_alert(run, context.failure_event.message or "", settings),
        settings,
        context.log.warning,
    )
