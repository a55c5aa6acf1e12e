"""Build metrics read from compatibility records: one row per build, and per pool/platform trends.

Records already hold every figure a user plots (timings, cache steps, image size and layers), so
metrics are computed from them rather than kept in a second store that could drift. Aggregates
cover a time window ending at `now`, by each record's `finished_at`, so `factory status` and the
Dagster metadata describe recent behaviour rather than the project's whole history.
"""

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Literal

from factory.records.model import STATUSES, CompatibilityRecord, RecordFigures, record_figures

GroupBy = Literal["pool", "platform"]

DEFAULT_WINDOW = timedelta(days=7)


def parse_time(value: str) -> datetime:
    """A record's UTC ISO 8601 time (`...Z` or `+00:00`) as an aware datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class BuildMetrics:
    """The figures of one build attempt; None where the attempt did not reach that stage.

    `build_s` is None for a re-test of an existing image (`image.rebuilt` false): that stage only
    looked the image up in the registry, and counting it would drag build percentiles towards zero.
    `cache_hit_ratio` is None when no build step ran, for the same reason.
    """

    build_id: str
    manifest_id: str
    platform: str
    pool: str
    status: str
    finished_at: datetime
    build_s: float | None
    test_s: float | None
    sbom_s: float | None
    cache_steps: int
    cache_cached: int
    cache_hit_ratio: float | None
    image_size_bytes: int | None
    layers: int | None
    rebuilt: bool | None

    def as_dict(self) -> dict:
        """JSON-ready values (the time as ISO 8601)."""
        values = asdict(self)
        values["finished_at"] = self.finished_at.isoformat()
        return values


def build_metrics(record: CompatibilityRecord) -> BuildMetrics:
    """Read one record's build and test duration, cache hit ratio, image size, layers, SBOM time."""
    return figures_metrics(record_figures(record))


_FIGURE_FIELDS = tuple(f.name for f in fields(RecordFigures))


def figures_metrics(figures: RecordFigures) -> BuildMetrics:
    """The metrics of one build attempt from its figures (a record's, or the index's columns)."""
    # The same fields under the same names, but for three that metrics read differently: the
    # time as a datetime, no build time or cache ratio for a re-test that did not rebuild, and
    # `layers` for the image's layer count.
    # Field by field, not dataclasses.asdict: that copies deeply, and `status` reads a week of
    # builds (14,000 here) through this function.
    values = {name: getattr(figures, name) for name in _FIGURE_FIELDS}
    values["layers"] = values.pop("image_layers")
    rebuilt, steps, cached = figures.rebuilt, figures.cache_steps, figures.cache_cached
    values.update(
        finished_at=parse_time(figures.finished_at),
        build_s=None if rebuilt is False else figures.build_s,
        cache_hit_ratio=cached / steps if steps > 0 and rebuilt is not False else None,
    )
    return BuildMetrics(**values)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between closest ranks; None if empty.

    The same definition as numpy's default (`method="linear"`), so figures can be checked with
    any spreadsheet: p50 of [1, 2, 3, 4] is 2.5 and p95 of [1..20] is 19.05.
    """
    if not values:
        return None
    if not 0 <= q <= 100:
        msg = f"percentile {q} is outside 0-100"
        raise ValueError(msg)
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class GroupMetrics:
    """Aggregates over the builds of one pool or platform within the window.

    `success_rate` is passes over all attempts (pass, fail, error): an infrastructure error costs
    the user as much as a failing test, so it is not left out.
    """

    group: str
    builds: int
    counts: dict[str, int]
    success_rate: float | None
    build_s_p50: float | None
    build_s_p95: float | None
    test_s_p50: float | None
    test_s_p95: float | None
    cache_hit_ratio_mean: float | None
    sbom_s_p50: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def aggregate_group(group: str, builds: Sequence[BuildMetrics]) -> GroupMetrics:
    """Counts by status, success rate, p50/p95 build and test seconds, mean cache hit ratio."""
    counts = Counter(b.status for b in builds)
    build_times = [b.build_s for b in builds if b.build_s is not None]
    test_times = [b.test_s for b in builds if b.test_s is not None]
    sbom_times = [b.sbom_s for b in builds if b.sbom_s is not None]
    ratios = [b.cache_hit_ratio for b in builds if b.cache_hit_ratio is not None]
    return GroupMetrics(
        group=group,
        builds=len(builds),
        counts={status: counts.get(status, 0) for status in STATUSES},
        success_rate=counts.get("pass", 0) / len(builds) if builds else None,
        build_s_p50=percentile(build_times, 50),
        build_s_p95=percentile(build_times, 95),
        test_s_p50=percentile(test_times, 50),
        test_s_p95=percentile(test_times, 95),
        cache_hit_ratio_mean=_mean(ratios),
        sbom_s_p50=percentile(sbom_times, 50),
    )


def in_window(
    records: Iterable[CompatibilityRecord | RecordFigures],
    *,
    now: datetime,
    window: timedelta | None,
) -> list[BuildMetrics]:
    """Metrics of the records (or their figures) that finished in `[now - window, now]` (all up
    to `now` if None)."""
    start = now - window if window is not None else None
    selected = []
    for record in records:
        figures = record if isinstance(record, RecordFigures) else record_figures(record)
        metrics = figures_metrics(figures)
        if metrics.finished_at > now or (start is not None and metrics.finished_at < start):
            continue
        selected.append(metrics)
    return selected


def aggregate(
    records: Iterable[CompatibilityRecord],
    *,
    by: GroupBy,
    now: datetime | None = None,
    window: timedelta | None = DEFAULT_WINDOW,
) -> dict[str, GroupMetrics]:
    """Aggregates per pool or per platform over the records that finished within the window."""
    now = now or datetime.now(UTC)
    return _grouped(in_window(records, now=now, window=window), by)


def _grouped(selected: list[BuildMetrics], by: GroupBy) -> dict[str, GroupMetrics]:
    groups: dict[str, list[BuildMetrics]] = {}
    for metrics in selected:
        groups.setdefault(getattr(metrics, by), []).append(metrics)
    return {name: aggregate_group(name, groups[name]) for name in sorted(groups)}


def build_report(
    records: Iterable[CompatibilityRecord | RecordFigures],
    *,
    now: datetime | None = None,
    window: timedelta | None = DEFAULT_WINDOW,
) -> dict:
    """The build half of `factory status`: aggregates by pool and by platform, JSON-ready, from
    records or their figures (`RecordsIndex.figures`)."""
    now = now or datetime.now(UTC)
    selected = in_window(records, now=now, window=window)  # once for both groupings
    return {
        "window_s": window.total_seconds() if window is not None else None,
        "by_pool": {k: v.as_dict() for k, v in _grouped(selected, "pool").items()},
        "by_platform": {k: v.as_dict() for k, v in _grouped(selected, "platform").items()},
    }
