"""The results consumer: the matrix and the multi-arch indexes follow new records by themselves.

Builds are launched from many places (`factory run`, the sensors, a backfill, the UI, `dagster
asset materialize`, `factory submit`); the matrix must not depend on which. Declarative
automation watches the records' materializations instead: `compatibility_matrix` and
`multiarch_index` are requested when any platform's `compatibility_record` partition was
materialized, or a build run of one failed (a failing test leaves a `fail` record but no
materialization), since they were last requested.

Since the last *request*, not the last materialization: a record that arrives while a matrix run
is in progress is not in that run's matrix, yet the run's materialization comes after the record.
Counting from the materialization would forget the record until the next one arrived; counting from
the request keeps it, and the next tick after the run asks again.

The request is seen (`newly_requested`) on the tick after it was made, and a record that landed
in between is seen on that same tick. `since` lets the reset win a tie, and the boolean operators
drop the timing that would let it tell the two apart, so such a record would be forgotten: the
matrix run may have read the records before it landed. The reset therefore counts only on a tick
that saw no new record; on the other ticks the condition stays true, and the matrix is requested
again once the run in progress has ended. At worst that is one matrix run too many.

A burst of records is coalesced: while a matrix run is in progress the condition waits, and the
next tick requests one run for everything that arrived meanwhile. So 100 records in a burst give
about one matrix run per tick of `results_automation_sensor`, not 100.

The publish gate is the asset's own (`factory.registry.publish.publish_plan`): an index is
published only when every listed platform passed for its current keys; automation only decides
when it looks.
"""

import dagster as dg

from factory.env_numbers import env_int

SENSOR_NAME = "results_automation_sensor"
DEFAULT_INTERVAL_S = 30


def automation_interval_s() -> int:
    """Seconds between the results sensor's ticks (FACTORY_AUTOMATION_INTERVAL_S, default 30)."""
    return env_int(
        "FACTORY_AUTOMATION_INTERVAL_S",
        DEFAULT_INTERVAL_S,
        low=1,
        high=86400,
        what="a number of seconds",
    )


def _record_failed() -> dg.AutomationCondition:
    # Per record partition: its latest run failed, and did not on the previous evaluation.
    return dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.execution_failed().newly_true()
    ).with_label("a build run of a record failed")


def _records_arrived() -> dg.AutomationCondition:
    return (
        dg.AutomationCondition.any_deps_updated().with_label("new records materialized")
        | _record_failed()
    )


def results_condition() -> dg.AutomationCondition:
    """New records (materialized, or a failed build) since the asset was last requested on a tick
    that saw no new record, and no run of it in progress."""
    arrived = _records_arrived()
    # A tick that sees the request and a new record at once must not forget the record.
    requested_before_all_records = (
        dg.AutomationCondition.newly_requested() & ~_records_arrived()
    ).with_label("requested, and no record arrived since")
    handled = requested_before_all_records | dg.AutomationCondition.initial_evaluation()
    return (arrived.since(handled) & ~dg.AutomationCondition.in_progress()).with_label(
        "new compatibility records"
    )


RESULTS_CONDITION = results_condition()

results_automation_sensor = dg.AutomationConditionSensorDefinition(
    SENSOR_NAME,
    target=dg.AssetSelection.assets("compatibility_matrix", "multiarch_index"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=automation_interval_s(),
    emit_backfills=False,
    description="Brings compatibility_matrix and multiarch_index up to date after new records, "
    "whatever launched the builds.",
)
