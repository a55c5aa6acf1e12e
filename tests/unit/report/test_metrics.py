"""Build metrics from records: per-build figures and per pool/platform aggregates, exact values."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from factory.platforms import BY_NAME
from factory.records.model import CacheInfo, CompatibilityRecord, ImageInfo, SuiteResult
from factory.report.metrics import (
    BuildMetrics,
    aggregate,
    build_metrics,
    build_report,
    percentile,
)
from factory_assets.queue_metrics import build_metadata, format_status, queue_metadata
from tests.unit.records.test_records import make_record

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def record(
    build_id: str,
    *,
    finished_at: str,
    platform: str = "linux/amd64",
    cache: tuple[int, int] = (0, 0),
    **fields,
) -> CompatibilityRecord:
    """A record of manifest "m" on `platform` (in that platform's pool), finished (and started) at
    `finished_at`, with the figures the metrics read; `fields` (status, timings_s, image, tests)
    override a pass without image, tests or timings."""
    steps, cached = cache
    return make_record(
        **{"image": None, **fields},
        build_id=build_id,
        manifest_id="m",
        platform=platform,
        pool=BY_NAME[platform].pool,
        inputs={},
        cache=CacheInfo(steps=steps, cached=cached),
        started_at=finished_at,
        finished_at=finished_at,
    )


def image(size: int = 1000, layers: int = 4, rebuilt: bool = True) -> ImageInfo:
    digest = "sha256:" + "d" * 64
    return ImageInfo(
        ref="r/factory/m:t", digest=digest, size_bytes=size, layers=layers, rebuilt=rebuilt
    )


# A known week: four amd64 attempts (pass, fail, build error, re-test only), one arm64 pass,
# and one amd64 pass from before the window.
RECORDS = [
    record(
        "r1",
        finished_at="2026-11-26T10:00:00.000000Z",
        timings_s={"render": 0.1, "build": 10.0, "test": 2.0, "sbom": 1.0},
        cache=(4, 3),
        image=image(size=1000, layers=4),
    ),
    record(
        "r2",
        finished_at="2026-11-26T11:00:00.000000Z",
        status="fail",
        timings_s={"build": 20.0, "test": 4.0, "sbom": 3.0},
        cache=(4, 1),
        image=image(size=3000, layers=5),
    ),
    record(
        "r3",
        finished_at="2026-11-25T09:00:00Z",
        status="error",
        timings_s={"build": 30.0},
    ),
    record(
        "r4",
        finished_at="2026-11-24T00:00:00.000000Z",
        timings_s={"build": 0.05, "test": 6.0},
        image=image(rebuilt=False),
    ),
    record(
        "r5",
        finished_at="2026-11-26T11:30:00.000000Z",
        platform="linux/arm64",
        timings_s={"build": 40.0, "test": 8.0, "sbom": 2.0},
        cache=(5, 5),
        image=image(size=500, layers=3),
    ),
    record(
        "old",
        finished_at="2026-11-10T00:00:00.000000Z",
        timings_s={"build": 999.0, "test": 999.0},
        cache=(1, 0),
    ),
]


def test_build_metrics_of_a_full_build():
    assert build_metrics(RECORDS[0]) == BuildMetrics(
        build_id="r1",
        manifest_id="m",
        platform="linux/amd64",
        pool="amd64",
        status="pass",
        finished_at=datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
        build_s=10.0,
        test_s=2.0,
        sbom_s=1.0,
        cache_steps=4,
        cache_cached=3,
        cache_hit_ratio=0.75,
        image_size_bytes=1000,
        layers=4,
        rebuilt=True,
    )


def test_a_retest_has_no_build_time_and_no_cache_ratio():
    metrics = build_metrics(RECORDS[3])
    assert (metrics.build_s, metrics.cache_hit_ratio, metrics.test_s) == (None, None, 6.0)
    assert metrics.rebuilt is False


def test_a_build_error_has_build_time_but_no_image():
    metrics = build_metrics(RECORDS[2])
    assert (metrics.build_s, metrics.test_s, metrics.image_size_bytes, metrics.layers) == (
        30.0,
        None,
        None,
        None,
    )


def test_test_time_falls_back_to_the_suites():
    suites = [
        SuiteResult(suite="a", status="pass", exit_code=0, duration_s=1.25),
        SuiteResult(suite="b", status="fail", exit_code=1, duration_s=0.5),
    ]
    metrics = build_metrics(record("x", finished_at="2026-11-26T00:00:00Z", tests=suites))
    assert metrics.test_s == 1.75


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([7.0], 95, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([float(v) for v in range(1, 21)], 95, 19.05),
        ([3.0, 1.0, 2.0], 0, 1.0),
        ([3.0, 1.0, 2.0], 100, 3.0),
    ],
)
def test_percentile_interpolates_linearly(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected, rel=1e-12)


def test_percentile_of_nothing_is_none():
    assert percentile([], 50) is None


def test_percentile_refuses_out_of_range():
    with pytest.raises(ValueError, match="outside 0-100"):
        percentile([1.0], 101)


def test_aggregate_per_pool_over_the_window():
    groups = aggregate(RECORDS, by="pool", now=NOW, window=timedelta(days=7))
    assert list(groups) == ["amd64", "arm64"]
    amd64 = groups["amd64"]
    assert amd64.builds == 4  # "old" is outside the window
    assert amd64.counts == {"pass": 2, "fail": 1, "error": 1}
    assert amd64.success_rate == 0.5
    # build times 10, 20, 30 (the re-test's 0.05 s lookup is not a build)
    assert amd64.build_s_p50 == 20.0
    assert amd64.build_s_p95 == pytest.approx(29.0, rel=1e-12)
    # test times 2, 4, 6 (the build error never tested)
    assert amd64.test_s_p50 == 4.0
    assert amd64.test_s_p95 == pytest.approx(5.8, rel=1e-12)
    # cache ratios 3/4 and 1/4; builds without steps do not count
    assert amd64.cache_hit_ratio_mean == 0.5
    assert amd64.sbom_s_p50 == 2.0

    arm64 = groups["arm64"]
    assert (arm64.builds, arm64.success_rate, arm64.cache_hit_ratio_mean) == (1, 1.0, 1.0)
    assert (arm64.build_s_p50, arm64.build_s_p95, arm64.test_s_p95) == (40.0, 40.0, 8.0)


def test_aggregate_per_platform_and_window_edges():
    groups = aggregate(RECORDS, by="platform", now=NOW, window=timedelta(hours=2))
    # Only r1 (10:00, on the edge), r2 (11:00) and r5 (11:30) finished in the last two hours.
    assert {k: v.builds for k, v in groups.items()} == {"linux/amd64": 2, "linux/arm64": 1}
    assert groups["linux/amd64"].counts == {"pass": 1, "fail": 1, "error": 0}
    everything = aggregate(RECORDS, by="platform", now=NOW, window=None)
    assert everything["linux/amd64"].builds == 5


def test_records_after_now_are_not_counted():
    groups = aggregate(RECORDS, by="pool", now=datetime(2026, 11, 26, 10, 30, tzinfo=UTC))
    assert groups["amd64"].builds == 3
    assert "arm64" not in groups


def test_format_status_prints_queues_and_builds():
    report = {
        "generated_at": NOW.isoformat(),
        "queues": {
            "amd64": {
                "pool": "amd64",
                "queued": 2,
                "oldest_queued_s": 754.0,
                "in_progress": 1,
                "finished_last_hour": 5,
                "retries_last_day": 1,
                "dead_letters": 0,
            }
        },
        "dead_letters": 0,
        "builds": build_report(RECORDS, now=NOW, window=timedelta(days=7)),
    }
    lines = format_status(report).splitlines()
    assert lines[1].split() == [
        "pool",
        "queued",
        "oldest",
        "running",
        "done/1h",
        "retries/24h",
        "dead",
        "letters",
    ]
    assert lines[2].split() == ["amd64", "2", "12m34s", "1", "5", "1", "0"]
    assert lines[4] == "Builds in the last 7 d, by pool"
    assert lines[6].split() == "amd64 4 2 1 1 50% 20.0s 29.0s 4.0s 5.8s 50%".split()
    assert "linux/arm64" in lines[-1]


def test_build_metadata_is_typed_and_leaves_out_stages_that_did_not_run():
    full = build_metadata(RECORDS[0])
    assert {k: v.value for k, v in full.items()} == {
        "build_s": 10.0,
        "test_s": 2.0,
        "sbom_s": 1.0,
        "cache_hit_ratio": 0.75,
        "size_bytes": 1000,
        "layers": 4,
    }
    assert isinstance(full["build_s"], dg.FloatMetadataValue)
    assert isinstance(full["layers"], dg.IntMetadataValue)
    assert set(build_metadata(RECORDS[2])) == {"build_s"}  # a build error: no image, no tests


def test_queue_metadata_names_pool_and_figure():
    report = {"queues": {"gpu": {"pool": "gpu", "queued": 1, "oldest_queued_s": 2.5}}}
    metadata = queue_metadata(report)
    assert {k: v.value for k, v in metadata.items()} == {
        "gpu/queued": 1,
        "gpu/oldest_queued_s": 2.5,
    }
