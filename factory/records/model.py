"""The compatibility record (record_version 1): its shape, and how one is assembled.

A record is written once per build attempt and never changed; DESIGN.md lists its fields and
docs/records.md explains them to users.
"""

import uuid
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

RECORD_VERSION = 1
Status = Literal["pass", "fail", "error"]
STATUSES: tuple[str, ...] = ("pass", "fail", "error")
K = TypeVar("K", bound=Hashable)


def new_build_id() -> str:
    return str(uuid.uuid4())


def utc_now() -> str:
    """UTC ISO 8601 with seconds precision and a Z, as records store times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageInfo(_Section):
    ref: str
    digest: str | None = None
    size_bytes: int | None = None
    layers: int | None = None
    rebuilt: bool = True


class SuiteResult(_Section):
    suite: str
    status: Literal["pass", "fail"]
    exit_code: int | None
    duration_s: float
    timed_out: bool = False


class CacheInfo(_Section):
    steps: int = 0
    cached: int = 0


class EvidenceRef(_Section):
    uri: str
    sha256: str


class ErrorInfo(_Section):
    stage: str
    message: str
    log_tail: str = ""
    transient: bool = False  # infrastructure trouble (retried), not a verdict on the manifest
    attempts: int = 1


class DagsterRef(_Section):
    run_id: str | None = None
    partition: str | None = None


class ExecutorRef(_Section):
    """Where the build ran (see factory/build/executor_identity.py)."""

    kind: str
    worker: str
    pool: str
    host: str
    docker_host: str
    engine_id: str | None = None


class AttestationRef(_Section):
    """One signed attestation attached to the image in the registry (docs/records.md)."""

    kind: str  # "sbom" or "provenance"
    predicate_type: str
    manifest_digest: str  # the OCI artifact manifest whose subject is the image
    envelope_digest: str  # its one layer: the DSSE envelope


class AttestationInfo(_Section):
    """The image's signed attestations; `error` says why they are missing when pushing failed."""

    signed: bool = False
    key_id: str | None = None
    scheme: str | None = None  # "referrers" (the registry's API) or "tag" (OCI 1.1 fallback tag)
    items: list[AttestationRef] = Field(default_factory=list)
    error: str | None = None


class QuarantineInfo(_Section):
    """Where a failing record's image was moved (`factory-quarantine/<id>:<tag>`), or why not."""

    ref: str | None = None
    error: str | None = None


class CompatibilityRecord(_Section):
    """One build attempt's outcome for one manifest x platform."""

    record_version: Literal[1] = RECORD_VERSION
    build_id: str
    manifest_id: str
    platform: str
    pool: str
    status: Status
    build_key: str
    record_key: str
    inputs: dict
    image: ImageInfo | None = None
    tests: list[SuiteResult] = Field(default_factory=list)
    cache: CacheInfo = Field(default_factory=CacheInfo)
    timings_s: dict[str, float] = Field(default_factory=dict)
    evidence: dict[str, EvidenceRef | None] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    started_at: str
    finished_at: str
    dagster: DagsterRef = Field(default_factory=DagsterRef)
    # Absent in records written before executors were named.
    executor: ExecutorRef | None = None
    # Absent in records written before attestations and quarantine existed.
    attestations: AttestationInfo | None = None
    quarantine: QuarantineInfo | None = None


@dataclass(frozen=True, slots=True)
class RecordFigures:
    """The figures of one build attempt as its record states them: what build metrics
    (factory/report/metrics.py) aggregate. The records index keeps them as columns, so that
    `factory status` reads a week of builds without parsing one record."""

    build_id: str
    manifest_id: str
    platform: str
    pool: str
    status: str
    finished_at: str
    build_s: float | None
    test_s: float | None
    sbom_s: float | None
    cache_steps: int
    cache_cached: int
    image_size_bytes: int | None
    image_layers: int | None
    rebuilt: bool | None


def record_figures(record) -> RecordFigures:
    """The figures of a record (or of anything shaped like one, such as the index's light
    records)."""
    timings = record.timings_s
    test_s = timings.get("test")
    if test_s is None and record.tests:
        # Older records only carry per-suite durations.
        test_s = sum(t.duration_s for t in record.tests)
    image = record.image
    return RecordFigures(
        build_id=record.build_id,
        manifest_id=record.manifest_id,
        platform=record.platform,
        pool=record.pool,
        status=record.status,
        finished_at=record.finished_at,
        build_s=timings.get("build"),
        test_s=test_s,
        sbom_s=timings.get("sbom"),
        cache_steps=record.cache.steps,
        cache_cached=record.cache.cached,
        image_size_bytes=image.size_bytes if image is not None else None,
        image_layers=image.layers if image is not None else None,
        rebuilt=image.rebuilt if image is not None else None,
    )


def parse_record(data: dict) -> CompatibilityRecord:
    return CompatibilityRecord.model_validate(data)


def log_tail(text: str, lines: int = 40) -> str:
    """The last lines of a log: enough to triage without opening the evidence."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def record_order(record: CompatibilityRecord) -> tuple[str, str]:
    """Sorts records oldest first."""
    # ISO 8601 UTC strings sort by time; the build_id breaks ties between equal times.
    return (record.finished_at, record.build_id)


def newest_by(
    records: Iterable[CompatibilityRecord], key: Callable[[CompatibilityRecord], K | None]
) -> dict[K, CompatibilityRecord]:
    """The newest record for each `key(record)` (a platform, a tag); None leaves a record out."""
    newest: dict[K, CompatibilityRecord] = {}
    for record in records:
        name = key(record)
        if name is not None and (
            name not in newest or record_order(record) > record_order(newest[name])
        ):
            newest[name] = record
    return newest
