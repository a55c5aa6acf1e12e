"""Queue metrics per pool from a real (temporary) Dagster instance's run storage.

Runs are written the way the daemon writes them: a queued run carries a job origin, starts and
ends are run events whose timestamps land in the run storage's start/end columns. Creation and
event times are set in the past so ages and the throughput window are exact.
"""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.events.log import EventLogEntry

# No public constructor makes a queued run without a workspace and daemon; the origin is only
# checked for presence here, never loaded.
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from factory.records.store import LocalRecordStore
from factory_assets.queue_metrics import format_status, pool_queue, status_report
from factory_assets.run_pool import IMPLICIT_JOBS

pytestmark = pytest.mark.integration

JOB = "build_linux_amd64"
IMPLICIT_ASSET_JOB, EPHEMERAL = IMPLICIT_JOBS
NOW = datetime.now(UTC).replace(microsecond=0)
ORIGIN = RemoteJobOrigin(
    repository_origin=RemoteRepositoryOrigin(
        code_location_origin=InProcessCodeLocationOrigin(
            loadable_target_origin=LoadableTargetOrigin(python_file=__file__)
        ),
        repository_name="__repository__",
    ),
    job_name=JOB,
)


def add_run(instance, status, *, pool="amd64", created_ago_s=0.0, tags=None) -> dg.DagsterRun:
    run = dg.DagsterRun(
        job_name=JOB,
        status=status,
        tags={"factory/pool": pool, **(tags or {})},
        remote_job_origin=ORIGIN,
    )
    return instance.run_storage.add_historical_run(run, NOW - timedelta(seconds=created_ago_s))


def report_event(instance, run, event_type: DagsterEventType, *, ago_s: float) -> None:
    event = DagsterEvent(event_type_value=event_type.value, job_name=JOB, message="")
    instance.handle_new_event(
        EventLogEntry(
            error_info=None,
            level=20,
            user_message="",
            run_id=run.run_id,
            timestamp=(NOW - timedelta(seconds=ago_s)).timestamp(),
            dagster_event=event,
            job_name=JOB,
        )
    )


def finished_run(instance, event_type, *, ended_ago_s, pool="amd64", tags=None):
    created = ended_ago_s + 60
    run = add_run(
        instance, dg.DagsterRunStatus.NOT_STARTED, pool=pool, created_ago_s=created, tags=tags
    )
    report_event(instance, run, DagsterEventType.RUN_START, ago_s=ended_ago_s + 30)
    report_event(instance, run, event_type, ago_s=ended_ago_s)
    return run


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


def test_depth_age_in_progress_throughput_and_retries(instance, tmp_path):
    queued = dg.DagsterRunStatus.QUEUED
    add_run(instance, queued, created_ago_s=90)
    add_run(instance, queued, created_ago_s=754)  # the oldest
    add_run(instance, queued, created_ago_s=5)
    add_run(instance, queued, pool="arm64", created_ago_s=30)
    add_run(instance, dg.DagsterRunStatus.STARTING)
    started = add_run(instance, dg.DagsterRunStatus.NOT_STARTED, created_ago_s=40)
    report_event(instance, started, DagsterEventType.RUN_START, ago_s=20)
    # Ended within the hour: two successes, a failure, a cancel (a retry among them).
    finished_run(instance, DagsterEventType.RUN_SUCCESS, ended_ago_s=60)
    finished_run(instance, DagsterEventType.RUN_SUCCESS, ended_ago_s=3000)
    finished_run(instance, DagsterEventType.RUN_FAILURE, ended_ago_s=600)
    finished_run(
        instance, DagsterEventType.RUN_CANCELED, ended_ago_s=120, tags={"dagster/retry_number": "1"}
    )
    # Ended before the hour; its status row is touched again now by a tag edit, which must not
    # make it count as finished now.
    old = finished_run(instance, DagsterEventType.RUN_SUCCESS, ended_ago_s=7200)
    instance.add_run_tags(old.run_id, {"note": "looked at"})
    finished_run(
        instance, DagsterEventType.RUN_FAILURE, ended_ago_s=4000, tags={"dagster/retry_number": "2"}
    )
    # Another pool's finished run and a run without a pool tag.
    finished_run(instance, DagsterEventType.RUN_SUCCESS, ended_ago_s=10, pool="arm64")
    instance.add_run(dg.DagsterRun(job_name="compatibility_matrix_job"))

    amd64 = pool_queue(instance, "amd64", now=NOW)
    assert amd64.queued == 3
    assert amd64.oldest_queued_s == 754.0
    assert amd64.in_progress == 2
    assert amd64.finished_last_hour == 4
    assert amd64.retries_last_day == 2

    arm64 = pool_queue(instance, "arm64", now=NOW)
    assert (arm64.queued, arm64.oldest_queued_s, arm64.in_progress) == (1, 30.0, 0)
    assert (arm64.finished_last_hour, arm64.retries_last_day) == (1, 0)

    gpu = pool_queue(instance, "gpu", now=NOW)
    assert (gpu.queued, gpu.oldest_queued_s, gpu.in_progress, gpu.finished_last_hour) == (
        0,
        None,
        0,
        0,
    )

    # Dead letters: two amd64 (by pool, by platform) and one that names nothing.
    store = LocalRecordStore(tmp_path)
    store.put("dlq", "d1", json.dumps({"pool": "amd64"}).encode())
    store.put("dlq", "d2", json.dumps({"platform": "linux/amd64"}).encode())
    store.put("dlq", "d3", b"not json")
    report = status_report(instance, [], tmp_path, now=NOW)
    assert report["dead_letters"] == 3
    assert {name: q["dead_letters"] for name, q in report["queues"].items()} == {
        "amd64": 2,
        "arm64": 0,
        "gpu": 0,
        "unknown": 1,
    }
    assert report["queues"]["amd64"]["queued"] == 3
    text = format_status(report)
    assert text.splitlines()[2].split() == ["amd64", "3", "12m34s", "2", "4", "2", "2"]
    assert "no records in this window" in text


def test_status_report_on_an_empty_instance_is_all_zero(instance, tmp_path):
    report = status_report(instance, [], tmp_path, now=NOW)
    assert sorted(report["queues"]) == ["amd64", "arm64", "gpu"]
    assert all(
        (q["queued"], q["in_progress"], q["finished_last_hour"], q["dead_letters"]) == (0, 0, 0, 0)
        for q in report["queues"].values()
    )


def add_asset_run(instance, status, keys, *, job=IMPLICIT_ASSET_JOB, partition="m1", ago_s=0.0):
    """A run as the UI's asset graph, an asset backfill or `dagster asset materialize` makes it:
    an implicit asset job, an asset selection, a partition tag, no factory tags."""
    run = dg.DagsterRun(
        job_name=job,
        status=status,
        tags={"dagster/partition": partition} if partition else {},
        asset_selection=frozenset(dg.AssetKey(k.split("/")) for k in keys),
        remote_job_origin=ORIGIN._replace(job_name=job),
    )
    return instance.run_storage.add_historical_run(run, NOW - timedelta(seconds=ago_s))


def test_runs_without_factory_tags_count_in_the_pool_of_their_assets(instance, tmp_path):
    arm64_chain = [f"linux_arm64/{n}" for n in ("dockerfile", "image", "compatibility_record")]
    add_asset_run(instance, dg.DagsterRunStatus.QUEUED, arm64_chain, ago_s=300)
    add_asset_run(instance, dg.DagsterRunStatus.QUEUED, arm64_chain, ago_s=20)
    add_run(instance, dg.DagsterRunStatus.QUEUED, pool="arm64", created_ago_s=100)
    add_asset_run(instance, dg.DagsterRunStatus.STARTED, ["linux_amd64_gpu/image"])
    done = add_asset_run(
        instance, dg.DagsterRunStatus.NOT_STARTED, ["linux_amd64/sbom"], job=EPHEMERAL, ago_s=90
    )
    report_event(instance, done, DagsterEventType.RUN_START, ago_s=80)
    report_event(instance, done, DagsterEventType.RUN_SUCCESS, ago_s=60)
    # Unpartitioned asset runs that build nothing (the matrix) belong to no pool.
    add_asset_run(
        instance, dg.DagsterRunStatus.QUEUED, ["compatibility_matrix"], partition=None, ago_s=999
    )

    report = status_report(instance, [], tmp_path, now=NOW)
    queues = report["queues"]
    assert (queues["arm64"]["queued"], queues["arm64"]["oldest_queued_s"]) == (3, 300.0)
    assert (queues["gpu"]["in_progress"], queues["gpu"]["queued"]) == (1, 0)
    assert (queues["amd64"]["finished_last_hour"], queues["amd64"]["queued"]) == (1, 0)
    assert sorted(queues) == ["amd64", "arm64", "gpu"]
    assert format_status(report).splitlines()[2].split()[:3] == ["amd64", "0", "-"]
    assert format_status(report).splitlines()[3].split()[:3] == ["arm64", "3", "5m00s"]
