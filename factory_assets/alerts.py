"""Alerts from the places things happen: the chain step (regression, cache ratio) and sensors
(dead letters, lost executors, queue backlog); the rules are in `factory.report.alert_conditions`.

The latches live in the Dagster instance's key-value store (the run storage's cursor table), which
every run worker, daemon and host of a deployment shares, so a condition alerts once wherever it
is noticed. Nothing here may fail what called it: a bad setting, a record store that does not
answer or a webhook that is down is a warning in the step's or the sensor's log.
"""

from collections.abc import Callable
from datetime import timedelta

import dagster as dg

from factory.env_numbers import env_int
from factory.errors import FactoryError
from factory.platforms import PLATFORMS
from factory.records.dlq import DeadLetter
from factory.records.index import finished_after
from factory.records.model import CompatibilityRecord
from factory.records.store import RecordStore as Store
from factory.report.alert_conditions import (
    Latch,
    cache_ratio,
    cache_ratio_alert,
    record_links,
    regression_alert,
    stable_cache_counts,
)
from factory.report.alerts import Alert, AlertSettings, send
from factory.settings import SettingsError
from factory.store.load import LoadedStore
from factory_assets.run_pool import run_combination

# How far back a pool's last N builds are looked for.
CACHE_LOOKBACK = timedelta(days=7)


def alert_interval_s() -> int:
    """Seconds between the alert sensors' ticks (FACTORY_ALERT_INTERVAL_S, default 60)."""
    return env_int("FACTORY_ALERT_INTERVAL_S", 60, low=1, high=86400, what="a number of seconds")


def instance_latch(instance: dg.DagsterInstance) -> Latch:
    storage = instance.run_storage
    return Latch(get=storage.get_cursor_values, set=storage.set_cursor_values)


def alert_settings(log: Callable[[str], None]) -> AlertSettings | None:
    """The settings when a webhook is configured; a bad value is logged, not raised."""
    try:
        settings = AlertSettings.from_env()
    except SettingsError as exc:
        log(f"alerts are off: {exc}")
        return None
    return settings if settings.webhook_url else None


def _previous(store: Store, record: CompatibilityRecord) -> CompatibilityRecord | None:
    earlier = [
        r
        for r in store.index.select(
            manifest_ids=[record.manifest_id],
            platforms=[record.platform],
            newest_per_combination=2,
        )
        if r.build_id != record.build_id and r.finished_at <= record.finished_at
    ]
    return earlier[-1] if earlier else None


def _pool_cache_counts(
    store: Store, loaded: LoadedStore, pool: str, builds: int
) -> list[tuple[int, int]]:
    """(stable steps, cached) of the pool's last `builds` builds that ran BuildKit."""
    platforms = [p.name for p in PLATFORMS if p.pool == pool]
    recent = store.index.select(platforms=platforms, finished_after=finished_after(CACHE_LOOKBACK))
    counts = []
    for record in reversed(recent):
        if record.image is None or not record.image.rebuilt:
            continue
        log = store.get("evidence", record.build_id)
        found = stable_cache_counts(record, (log or b"").decode(errors="replace"), loaded)
        if found is not None:
            counts.append(found)
        if len(counts) >= builds:
            break
    return counts


def record_alerts(
    record: CompatibilityRecord,
    store: Store,
    loaded: LoadedStore | None,
    settings: AlertSettings,
    latch: Latch,
) -> list[Alert]:
    """What one new record sets off: a regression, a pool's cache ratio falling (or clearing)."""
    alerts = []
    regression = regression_alert(
        record, _previous(store, record), settings, record_links(record, store.uri)
    )
    if regression is not None:
        alerts.append(regression)
    if loaded is not None and record.image is not None and record.image.rebuilt:
        counts = _pool_cache_counts(store, loaded, record.pool, settings.cache_builds)
        ratio = cache_ratio(counts)
        if ratio is not None:
            low = ratio < settings.cache_ratio
            if latch.update(f"cache_ratio:{record.pool}", low):
                alerts.append(cache_ratio_alert(ratio, len(counts), settings, record))
    return alerts


def alert_after_record(
    context: dg.AssetExecutionContext,
    record: CompatibilityRecord,
    store: Store,
    load_store: Callable[[], LoadedStore] | None = None,
) -> None:
    """Called by the chain step once its record is written; never raises. Without `load_store`
    (a failing stage, which has no manifest store at hand) only a regression is looked for."""
    settings = alert_settings(context.log.warning)
    if settings is None:
        return
    try:
        latch = instance_latch(context.instance)
        alerts = record_alerts(record, store, load_store() if load_store else None, settings, latch)
    except (FactoryError, OSError, ValueError, KeyError) as exc:
        context.log.warning(f"alerts for build {record.build_id} not evaluated: {exc}")
        return
    for alert in alerts:
        send(alert, settings, context.log.warning)


def dead_letter_alert(letter: DeadLetter, store: Store, settings: AlertSettings) -> Alert:
    links = {"dead_letter": store.uri("dlq", letter.key)}
    links.update({k: v for k, v in (("record", letter.record), ("error", letter.error_file)) if v})
    return Alert.for_build(
        "dead_letter",
        f"{letter.manifest_id or '?'} on {letter.platform or '?'} failed for good "
        f"({letter.reason}, stage {letter.stage}, {letter.attempts} attempts): {letter.error}"
        f" (requeue with `factory dlq requeue {letter.key}`)",
        letter,
        links={**links, **settings.run_link(letter.run_id)},
        details={"key": letter.key, "reason": letter.reason, "stage": letter.stage},
    )


def executor_lost_alert(run: dg.DagsterRun, message: str, settings: AlertSettings) -> Alert:
    combination = run_combination(run)
    return Alert(
        kind="executor_lost",
        text=(
            f"run {run.run_id} of {combination.manifest_id if combination else '?'} on "
            f"{combination.platform if combination else '?'} lost its executor mid-run: "
            f"{message.splitlines()[0][:300] if message else 'the run worker died'}"
        ),
        manifest=combination.manifest_id if combination else None,
        platform=combination.platform if combination else None,
        pool=combination.pool if combination else None,
        links=settings.run_link(run.run_id),
        details={"run_id": run.run_id, "job_name": run.job_name},
    )


def alert_dead_letter(letter: DeadLetter, store: Store, log: Callable[[str], None]) -> None:
    """Called by the dead-letter sensor once it wrote a letter (a letter is written once)."""
    settings = alert_settings(log)
    if settings is not None:
        send(dead_letter_alert(letter, store, settings), settings, log)
