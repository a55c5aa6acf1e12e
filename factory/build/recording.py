"""A build attempt written down: its evidence log, provenance, error file and immutable record.

Owns what happens when a combination's stages end, passed or not: the evidence log (every
stage's log, with where it ran), an in-toto SLSA provenance statement for a built image, the image
sealed (signed attestations for a pass, quarantine for a failure), `errors/error-<build_id>.json`
for a failure, and the record itself, with status `pass`, `fail` (a test failed) or `error`
(anything else). Records are written once: a build id already recorded is refused.
"""

import os
import socket

from factory.build.executor_identity import ExecutorIdentity
from factory.build.pipeline import BuildState, Services
from factory.errors import RecordExistsError, StageError
from factory.records.model import (
    CacheInfo,
    CompatibilityRecord,
    DagsterRef,
    ErrorInfo,
    EvidenceRef,
    ExecutorRef,
    ImageInfo,
    SuiteResult,
    utc_now,
)
from factory.supply_chain.provenance import build_provenance
from factory.supply_chain.seal import seal_image


def _evidence_text(state: BuildState, executor: ExecutorIdentity | None) -> str:
    header = (
        f"factory build {state.build_id}\nmanifest {state.manifest_id}\nplatform {state.platform}\n"
        f"build_key {state.build_key}\nrecord_key {state.record_key}\nimage {state.image_ref}\n"
    )
    if executor is not None:
        header += f"executor {executor.describe()}\n"
    sections = [f"===== {stage} =====\n{text.rstrip()}\n" for stage, text in state.logs]
    return header + "\n" + "\n".join(sections)


def _write_provenance(
    state: BuildState, services: Services, finished_at: str, run_id: str | None
) -> dict | None:
    """An in-toto SLSA provenance statement for a built image (none when nothing was built)."""
    if not state.image or not state.image.get("digest"):
        return None
    statement = build_provenance(
        build_id=state.build_id,
        image_ref=state.image_ref,
        image_digest=state.image["digest"],
        platform=state.platform,
        inputs=state.inputs,
        build_key=state.build_key,
        record_key=state.record_key,
        dagster_run_id=run_id,
        started_at=state.started_at,
        finished_at=finished_at,
        builder_id=builder_id(),
        manifest_id=state.manifest_id,
    )
    uri, sha = services.records.put_json("provenance", state.build_id, statement)
    return {"uri": uri, "sha256": sha}


def builder_id() -> str:
    """Who built it: FACTORY_BUILDER_ID, else this host's Factory builder."""
    return os.environ.get("FACTORY_BUILDER_ID") or f"urn:factory:builder:{socket.gethostname()}"


def _write_record(
    state: BuildState,
    services: Services,
    *,
    status: str,
    error: StageError | None,
    partition: str | None,
    attempts: int = 1,
    run_id: str | None = None,
) -> tuple[CompatibilityRecord, str]:
    if services.records.get("record", state.build_id) is not None:
        msg = (
            f"build {state.build_id} ({state.label()}) is already recorded; records are written "
            "once. Materialize the whole chain to start a new build."
        )
        raise RecordExistsError(msg)
    log_uri, log_sha = services.records.put(
        "evidence", state.build_id, _evidence_text(state, services.executor).encode()
    )
    finished_at = utc_now()
    run_id = run_id or state.run_id
    evidence: dict = {
        "log": {"uri": log_uri, "sha256": log_sha},
        "sbom": state.evidence.get("sbom"),
        "provenance": _write_provenance(state, services, finished_at, run_id),
    }
    attestations, quarantine = seal_image(
        status=status,
        build_id=state.build_id,
        image_ref=state.image_ref,
        image_digest=state.image.get("digest") if state.image else None,
        from_quarantine=state.from_quarantine,
        records=services.records,
    )
    error_info = None
    if error is not None:
        error_info = ErrorInfo(
            stage=error.stage,
            message=str(error),
            log_tail=error.log_tail,
            transient=error.transient,
            attempts=attempts,
        )
    record = CompatibilityRecord(
        build_id=state.build_id,
        manifest_id=state.manifest_id,
        platform=state.platform,
        pool=state.pool,
        status=status,  # type: ignore[arg-type]
        build_key=state.build_key,
        record_key=state.record_key,
        inputs=state.inputs,
        image=ImageInfo(**state.image) if state.image else ImageInfo(ref=state.image_ref),
        tests=[SuiteResult(**t) for t in state.tests],
        cache=CacheInfo(**state.cache),
        timings_s=state.timings_s,
        evidence={k: (EvidenceRef(**v) if v else None) for k, v in evidence.items()},
        error=error_info,
        started_at=state.started_at,
        finished_at=finished_at,
        # The run that finished the attempt (a retry resumes another run's state).
        dagster=DagsterRef(run_id=run_id, partition=partition),
        executor=ExecutorRef(**services.executor.as_record()) if services.executor else None,
        attestations=attestations,
        quarantine=quarantine,
    )
    if error_info is not None:
        services.records.put_json(
            "error",
            state.build_id,
            {
                "build_id": state.build_id,
                "manifest_id": state.manifest_id,
                "platform": state.platform,
                "status": status,
                **error_info.model_dump(),
                "evidence": log_uri,
                "finished_at": record.finished_at,
            },
        )
    uri = services.records.write_record(record)
    return record, uri


def record_success(
    state: BuildState,
    services: Services,
    *,
    partition: str | None = None,
    run_id: str | None = None,
) -> tuple[CompatibilityRecord, str]:
    """Write the evidence log and a `pass` record."""
    return _write_record(
        state, services, status="pass", error=None, partition=partition, run_id=run_id
    )


def record_failure(
    state: BuildState,
    error: StageError,
    services: Services,
    *,
    partition: str | None = None,
    attempts: int = 1,
    run_id: str | None = None,
) -> tuple[CompatibilityRecord, str]:
    """Write the evidence log, `errors/error-<build_id>.json` and a `fail`/`error` record."""
    return _write_record(
        state,
        services,
        status=error.status,
        error=error,
        partition=partition,
        attempts=attempts,
        run_id=run_id,
    )
