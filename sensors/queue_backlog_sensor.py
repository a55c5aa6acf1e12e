"""Queue backlog: alert when a pool's oldest queued run has waited too long.

Every FACTORY_ALERT_INTERVAL_S (default 60) it reads each pool's oldest queued run, counting runs
from any launcher (`factory_assets.queue_metrics`), and alerts once when the wait passes
FACTORY_ALERT_QUEUE_AGE_S; again only after the pool's queue has caught up.
"""

from datetime import UTC, datetime

import dagster as dg

from factory.report.alert_conditions import queue_backlog_alert
from factory.report.alerts import send
from factory_assets.alerts import alert_interval_s, alert_settings, instance_latch
from factory_assets.queue_metrics import pool_queue, pools


@dg.sensor(
    name="queue_backlog_sensor",
    minimum_interval_seconds=alert_interval_s(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (FACTORY_ALERT_WEBHOOK_URL) when a pool's oldest queued run waited "
    "longer than FACTORY_ALERT_QUEUE_AGE_S.",
)
def queue_backlog_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    settings = alert_settings(context.log.warning)
    if settings is None:
        return dg.SkipReason("no FACTORY_ALERT_WEBHOOK_URL: alerts are off")
    latch = instance_latch(context.instance)
    now = datetime.now(UTC)
    sent = []
    for pool in pools(context.instance):
        queue = pool_queue(context.instance, pool, now=now)
        oldest = queue.oldest_queued_s or 0.0
        if latch.update(f"queue_backlog:{pool}", oldest > settings.queue_age_s):
            alert = queue_backlog_alert(pool, oldest, queue.queued, settings)
            send(alert, settings, context.log.warning)
            sent.append(pool)
    return dg.SkipReason(f"backlog alerts: {', '.join(sent) or 'none'}")
