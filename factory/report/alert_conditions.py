"""When to alert: each condition alerts once when it becomes true, and again only after it cleared.

- `regression`: a combination's new record is `fail`/`error` and its previous one was `pass`. The
  records themselves are the state: a repeated failure follows a failure, so it never alerts;
  a pass in between clears it.
- `cache_ratio`: over a pool's last N builds that ran BuildKit, the share of stable-layer RUN
  steps (the leading security/core fragments, read from each build's evidence log) that came from
  the cache is below the threshold. A latch remembers that it alerted.
- `queue_backlog`: a pool's oldest queued run waited longer than FACTORY_ALERT_QUEUE_AGE_S. Latched.
- `dead_letter` and `executor_lost` happen once per letter or lost run: no latch needed.

A latch is a key in a small key-value store that every process of a deployment shares (the
Dagster instance's, see `factory_assets.alerts`): `update` says whether the condition just became
active. No Dagster import here.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from factory.build.buildlog import matching_steps
from factory.build.prewarm import STABLE_FRAGMENTS
from factory.records.model import CompatibilityRecord
from factory.report.alerts import Alert, AlertSettings
from factory.store.load import LoadedStore

LATCH_PREFIX = "factory/alert/"
ACTIVE = "active"


@dataclass
class Latch:
    """Once-until-cleared over a key-value store (`get(keys) -> {key: value}`, `set(pairs)`)."""

    get: Callable[[set[str]], Mapping[str, str]]
    set: Callable[[Mapping[str, str]], None]

    def update(self, condition: str, active: bool) -> bool:
        """Record the condition's state; True when it has just become active (alert now)."""
        key = LATCH_PREFIX + condition
        was = self.get({key}).get(key) == ACTIVE
        if was != active:
            self.set({key: ACTIVE if active else ""})
        return active and not was


def record_links(record: CompatibilityRecord, uri_of: Callable[[str, str], str]) -> dict:
    """Where to look: the record, its evidence log, its error file when it failed."""
    links = {"record": uri_of("record", record.build_id)}
    log = record.evidence.get("log") if record.evidence else None
    if log is not None:
        links["evidence"] = log.uri
    if record.status != "pass":
        links["error"] = uri_of("error", record.build_id)
    return links


def regression_alert(
    record: CompatibilityRecord,
    previous: CompatibilityRecord | None,
    settings: AlertSettings,
    links: dict,
) -> Alert | None:
    """An alert when `record` failed and the combination's previous record passed."""
    if record.status == "pass" or previous is None or previous.status != "pass":
        return None
    stage = record.error.stage if record.error else "test"
    message = record.error.message.splitlines()[0][:300] if record.error else ""
    return Alert.for_build(
        "regression",
        f"{record.manifest_id} on {record.platform} went from pass to {record.status} "
        f"(stage {stage}): {message}",
        record,
        links={**links, **settings.run_link(record.dagster.run_id if record.dagster else None)},
        details={"previous_build_id": previous.build_id, "status": record.status, "stage": stage},
    )


def stable_snippets(record: CompatibilityRecord, store: LoadedStore) -> list[str] | None:
    """The texts of the record's leading stable fragments, as the store holds them now; None when
    the store no longer has one with the same content (the build cannot be judged)."""
    snippets = []
    for fragment in record.inputs.get("fragments", []):
        if fragment.get("name") not in STABLE_FRAGMENTS:
            break
        try:
            file = store.module_file(fragment["name"], fragment["version"])
        except KeyError:
            return None
        if file.sha256 != fragment.get("sha256"):
            return None
        snippets.append(file.text)
    return snippets


def stable_cache_counts(
    record: CompatibilityRecord, log_text: str, store: LoadedStore
) -> tuple[int, int] | None:
    """(stable RUN steps, how many were cached) of one build, None when it ran no BuildKit build
    (a reused image) or has no stable layers to judge."""
    if record.image is None or not record.image.rebuilt:
        return None
    snippets = stable_snippets(record, store)
    if not snippets:
        return None
    steps = matching_steps(log_text, snippets)
    if not steps:
        return None
    return len(steps), sum(1 for s in steps if s.cached)


def cache_ratio(counts: Iterable[tuple[int, int]]) -> float | None:
    """Cached stable steps over all stable steps of the given builds."""
    total = cached = 0
    for steps, hits in counts:
        total += steps
        cached += hits
    return cached / total if total else None


def cache_ratio_alert(
    ratio: float, builds: int, settings: AlertSettings, record: CompatibilityRecord
) -> Alert:
    """The pool of `record` (the build that brought the ratio down) misses its stable layers."""
    return Alert.for_build(
        "cache_ratio",
        f"pool {record.pool}: stable-layer cache hit ratio {ratio:.0%} over the last {builds} "
        f"builds is below {settings.cache_ratio:.0%} (is the cache ref or prewarm missing?)",
        record,
        links=settings.run_link(record.dagster.run_id if record.dagster else None),
        details={"ratio": round(ratio, 4), "builds": builds, "threshold": settings.cache_ratio},
    )


def queue_backlog_alert(pool: str, oldest_s: float, queued: int, settings: AlertSettings) -> Alert:
    return Alert(
        kind="queue_backlog",
        text=(
            f"pool {pool}: the oldest of {queued} queued runs has waited {oldest_s:.0f}s, more "
            f"than {settings.queue_age_s:g}s (are its workers up and its limit right?)"
        ),
        pool=pool,
        links={"runs": f"{settings.dagster_url}/runs?q[]=status%3AQUEUED"}
        if settings.dagster_url
        else {},
        details={"oldest_queued_s": round(oldest_s, 1), "queued": queued},
    )
