"""Re-check a compatibility record against its evidence and the registry (`factory verify`).

A record is only as trustworthy as what it points to. It carries the sha256 of its evidence log,
SBOM and provenance, and the digest of the image it describes; this module recomputes each of those
from the stored files and the registry, so a file edited after the fact, an SBOM or provenance that
describes another image, or a tag re-pushed over the tested image is reported instead of being
silently trusted.

Each check is reported separately (name, ok, detail) so a user sees everything that is wrong at
once. Checks that do not apply (no image for an `error` record, no provenance in older records,
the registry when `registry_check=False`) are reported as skipped, not as passed silently.
No Dagster import: the CLI calls `verify_build` directly.
"""

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from packageurl import PackageURL

from factory.errors import FactoryError, RegistryError, ServiceError
from factory.platforms import platform as lookup_platform
from factory.records.model import CompatibilityRecord, EvidenceRef
from factory.records.store import RecordStore, check_id, load_record
from factory.registry.client import RegistryClient
from factory.registry.names import split_reference
from factory.safe_json import UnreadableEntryError, parse_json, printable
from factory.store.keys import image_ref as expected_image_ref
from factory.supply_chain.provenance import (
    image_repository,
    resolved_dependencies,
    validate_provenance,
)

__all__ = ["UnknownBuildError", "VerifyCheck", "VerifyReport", "verify_build"]

# record.evidence key -> RecordStore kind (the log is stored as kind "evidence").
EVIDENCE_KINDS: dict[str, str] = {"log": "evidence", "sbom": "sbom", "provenance": "provenance"}


class UnknownBuildError(FactoryError, LookupError):
    """No record exists for the build_id asked about (nothing to verify)."""


@dataclass(frozen=True)
class VerifyCheck:
    """One thing that was checked: `ok` False means the record cannot be trusted as it stands."""

    name: str
    ok: bool
    detail: str
    skipped: bool = False


@dataclass
class VerifyReport:
    """Every check made for one build; `ok` only when none failed (skipped checks do not fail)."""

    build_id: str
    checks: list[VerifyCheck] = field(default_factory=list)
    # `REPOSITORY@DIGEST` of the record's pushed image, for checking its attestations.
    image_ref: str | None = None
    label: str = "build"

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[VerifyCheck]:
        return [check for check in self.checks if not check.ok]

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(VerifyCheck(name, ok, detail))

    def skip(self, name: str, detail: str) -> None:
        self.checks.append(VerifyCheck(name, True, detail, skipped=True))

    def lines(self) -> list[str]:
        """One line per check, as `factory verify` prints them, then a verdict line."""
        out = []
        for check in self.checks:
            mark = "skip" if check.skipped else ("ok" if check.ok else "FAIL")
            out.append(f"  {mark:<4} {check.name:<20} {check.detail}")
        verdict = "verified" if self.ok else f"NOT verified ({len(self.failed)} check(s) failed)"
        out.append(f"{self.label} {self.build_id}: {verdict}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "build_id": self.build_id,
            "ok": self.ok,
            "checks": [asdict(check) for check in self.checks],
        }


def verify_build(
    build_id: str,
    records: RecordStore,
    *,
    registry_check: bool = True,
    registry_client: Callable[[str], Any] = RegistryClient,
) -> VerifyReport:
    """Re-check one build's record; see the module docstring for what is checked.

    Raises UnknownBuildError when the store has no record for `build_id`. Everything else that can
    be wrong (unreadable record, missing or changed files, mismatched digests, an unreachable
    registry) is a failed check in the report, never an exception. `registry_client` makes a
    client for a registry address (`RegistryClient` by default; tests pass a fake).
    """
    report = VerifyReport(build_id)
    try:
        raw = _get_record(build_id, records)
        record = load_record(raw, records.where("record", build_id), build_id)
    except UnreadableEntryError as exc:
        # Not a regular file, too big, not JSON, or fields Factory cannot use: named, not echoed.
        report.add("record", False, f"{exc.path} is not a valid record: {exc.reason}")
        return report
    report.add("record", True, f"{record.manifest_id} on {record.platform}: {record.status}")

    digest = record.image.digest if record.image else None
    if digest and record.image is not None:
        report.image_ref = f"{record.image.ref.rsplit(':', 1)[0]}@{digest}"
    documents = _check_evidence_files(record, records, report)
    _check_image_ref(record, report)
    for kind, check in (("sbom", _check_sbom), ("provenance", _check_provenance)):
        document = documents.get(kind)
        if document is None:
            # Absent, or it failed its file check: its subject is not compared (skipped).
            report.skip(f"{kind} subject", _not_compared(kind, record))
        else:
            check(document, record, digest, report)
    if not registry_check:
        report.skip("registry", "not checked (registry check turned off)")
    else:
        _check_registry(record, digest, report, registry_client)
    return report


# --- the record and its files -----------------------------------------------------------------


def _get_record(build_id: str, records: RecordStore) -> bytes:
    try:
        check_id(build_id)
    except ValueError:  # a build_id the store cannot even form a name from (or far too long)
        msg = (
            f"{printable(build_id, limit=80)!r} is not a build id (letters, digits, '.', '_', "
            "'-', at most 128 characters): list builds with `factory records`"
        )
        raise UnknownBuildError(msg) from None
    raw = records.get("record", build_id)
    if raw is None:
        msg = (
            f"no record for build {build_id} in {records.uri('record', build_id)}: check the id "
            "(`factory records` lists them) and FACTORY_DATA_DIR"
        )
        raise UnknownBuildError(msg)
    return raw


def _check_evidence_files(
    record: CompatibilityRecord, records: RecordStore, report: VerifyReport
) -> dict[str, Any]:
    """Hash each referenced file; return the parsed JSON of the SBOM and provenance that match.

    Documents whose hash does not match are not returned: comparing digests inside a file already
    known to be altered would only add noise to the report.
    """
    documents: dict[str, Any] = {}
    for name, kind in EVIDENCE_KINDS.items():
        check = f"{name} sha256"
        ref = record.evidence.get(name)
        try:
            data = records.get(kind, record.build_id)
        except UnreadableEntryError as exc:
            report.add(check, False, f"{exc.path} cannot be checked: {exc.reason}")
            continue
        if ref is None:
            if data is not None:
                report.add(
                    check,
                    False,
                    f"{records.uri(kind, record.build_id)} exists but the "
                    "record does not reference it",
                )
            elif name == "log":
                report.add(
                    check, False, "the record references no evidence log (every build writes one)"
                )
            elif name == "sbom" and record.status == "pass":
                report.add(check, False, "a passing record must reference an SBOM")
            else:
                report.skip(check, "not recorded for this build")
            continue
        if not _matches(ref, data, check, records.uri(kind, record.build_id), report):
            continue
        if name != "log":
            try:
                documents[name] = parse_json(data, records.where(kind, record.build_id))  # type: ignore[arg-type]
            except UnreadableEntryError as exc:
                report.add(f"{name} format", False, f"not JSON: {exc.reason}")
    return documents


def _matches(
    ref: EvidenceRef, data: bytes | None, check: str, where: str, report: VerifyReport
) -> bool:
    if data is None:
        report.add(
            check, False, f"{where} is missing (the record references it, sha256 {ref.sha256})"
        )
        return False
    actual = hashlib.sha256(data).hexdigest()
    if actual != ref.sha256:
        report.add(
            check,
            False,
            f"{where} has sha256 {actual}, the record says {ref.sha256}: "
            "the file changed after the record was written",
        )
        return False
    moved = "" if ref.uri == where else f" (recorded at {ref.uri})"
    report.add(check, True, f"{actual}{moved}")
    return True


# --- the image and the documents that describe it ---------------------------------------------


def _check_image_ref(record: CompatibilityRecord, report: VerifyReport) -> None:
    """The ref must be the one Factory derives from the record's own keys (keys.image_ref)."""
    if record.image is None:
        report.skip("image ref", "the record has no image")
        return
    ref = record.image.ref
    try:
        registry, _, _ = split_reference(ref)
        wanted = expected_image_ref(
            registry, record.manifest_id, lookup_platform(record.platform), record.build_key
        )
    except ValueError as exc:
        report.add("image ref", False, f"{ref!r}: {exc}")
        return
    if ref != wanted:
        report.add(
            "image ref",
            False,
            f"{ref} is not the ref of this record's manifest, platform "
            f"and build key (expected {wanted})",
        )
    else:
        report.add("image ref", True, ref)


def _not_compared(kind: str, record: CompatibilityRecord) -> str:
    if record.evidence.get(kind) is None:
        return f"no {kind} recorded"
    return f"not compared: the {kind} file failed the check above"


def _check_sbom(
    bom: Any, record: CompatibilityRecord, digest: str | None, report: VerifyReport
) -> None:
    report.add("sbom subject", *_sbom_subject(bom, digest))


def _sbom_subject(bom: Any, digest: str | None) -> tuple[bool, str]:
    """Whether the SBOM describes the record's image, and what it names or why not."""
    if not digest:
        return False, "the SBOM names an image but the record has no digest"
    component = (bom.get("metadata") or {}).get("component") if isinstance(bom, dict) else None
    if not isinstance(component, dict):
        return False, "the SBOM has no metadata.component (its subject)"
    named = component.get("version")
    purl_version = _purl_version(component.get("purl"))
    if named != digest:
        return False, f"the SBOM describes {named!r}, the record's image is {digest}"
    if purl_version is not None and purl_version != digest:
        return False, f"the SBOM's purl names {purl_version!r}, the record's image is {digest}"
    return True, digest


def _purl_version(purl: Any) -> str | None:
    """The version (the digest) of `pkg:oci/name@sha256:...?...`; None when there is no purl.

    An unparseable purl gives its own text, which then fails the comparison with the digest.
    """
    if purl is None:
        return None
    try:
        return PackageURL.from_string(purl).version
    except (ValueError, TypeError, AttributeError):
        return str(purl)


def _check_provenance(
    doc: Any, record: CompatibilityRecord, digest: str | None, report: VerifyReport
) -> None:
    try:
        validate_provenance(doc)
    except ValueError as exc:
        report.add("provenance format", False, str(exc))
        return
    report.add("provenance format", True, "in-toto Statement v1, SLSA provenance v1")
    report.add("provenance subject", *_provenance_subject(doc, record, digest))
    report.add(*_provenance_binding(doc, record))


def _provenance_subject(
    doc: dict, record: CompatibilityRecord, digest: str | None
) -> tuple[bool, str]:
    """Whether the (valid) provenance attests the record's image, and what it names or why not."""
    subject = doc["subject"][0]
    attested = subject["digest"]["sha256"]
    if not digest:
        return False, "the provenance names an image but the record has no digest"
    if attested != digest.removeprefix("sha256:"):
        return False, f"the provenance attests sha256:{attested}, the record's image is {digest}"
    if record.image is not None and subject["name"] != _repository(record.image.ref):
        return False, (
            f"the provenance names {subject['name']!r}, the "
            f"record's image is in {_repository(record.image.ref)!r}"
        )
    return True, f"{subject['name']}@{digest}"


def _provenance_binding(doc: dict, record: CompatibilityRecord) -> tuple[str, bool, str]:
    """Same build, keys, Dagster run and inputs as the record: a provenance of another build of
    the same image (a rebuild with equal bytes) would otherwise pass the subject check."""
    definition = doc["predicate"]["buildDefinition"]
    internal = definition["internalParameters"]
    mismatches = [
        name
        for name, wanted in (
            ("build_id", record.build_id),
            ("build_key", record.build_key),
            ("record_key", record.record_key),
        )
        if internal.get(name) != wanted
    ]
    invocation = doc["predicate"]["runDetails"]["metadata"].get("invocationId")
    if invocation != record.dagster.run_id:
        mismatches.append("invocationId")
    try:
        wanted_deps = resolved_dependencies(record.inputs)
    except ValueError as exc:
        return "provenance inputs", False, f"the record's inputs cannot be compared: {exc}"
    got = [(d.get("uri"), d["digest"].get("sha256")) for d in definition["resolvedDependencies"]]
    if got != [(d["uri"], d["digest"]["sha256"]) for d in wanted_deps]:
        mismatches.append("resolvedDependencies")
    if mismatches:
        return ("provenance inputs", False, "differs from the record in: " + ", ".join(mismatches))
    return "provenance inputs", True, f"{len(got)} dependencies, keys and run id match the record"


def _repository(ref: str) -> str:
    try:
        return image_repository(ref)
    except ValueError:
        return ref


# --- the registry -------------------------------------------------------------------------------


def _check_registry(
    record: CompatibilityRecord,
    digest: str | None,
    report: VerifyReport,
    registry_client: Callable[[str], Any],
) -> None:
    """HEAD the image's tag: the tested image must still be what the tag serves."""
    if record.image is None or not digest:
        report.skip("registry", "the record has no pushed image to look up")
        return
    ref = record.image.ref
    if record.quarantine is not None and record.quarantine.ref:
        ref = record.quarantine.ref  # a failing build's image lives only there
    try:
        address, repository, tag = split_reference(ref)
        client = registry_client(address)
        served = client.head_digest(repository, tag)
    except (ValueError, RegistryError, ServiceError) as exc:
        report.add("registry", False, f"could not look up {ref}: {exc}")
        return
    if served is None:
        report.add(
            "registry",
            False,
            f"{ref} no longer exists in the registry (deleted or garbage-collected)",
        )
    elif served != digest:
        report.add(
            "registry",
            False,
            f"{ref} now serves {served}, the record's image is {digest}: "
            "the tag was pushed over after the record was written",
        )
    else:
        report.add("registry", True, f"{ref} -> {served}")
        _check_attestations(record, client, report)


def _check_attestations(record: CompatibilityRecord, client: Any, report: VerifyReport) -> None:
    """The attestations the record names must still be attached to its image, unchanged."""
    info = record.attestations
    if info is None or not (info.items or info.error):
        return
    if info.error:
        report.add("attestations", False, f"none attached when recorded: {info.error}")
        return
    from factory.supply_chain.attestation_verify import check_recorded

    try:
        ok, detail = check_recorded(record, client)
    except (ValueError, RegistryError, ServiceError) as exc:
        ok, detail = False, f"could not list the image's attestations: {exc}"
    report.add("attestations", ok, detail)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
