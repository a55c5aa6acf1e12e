"""Dead letters: builds that failed for good with nothing an operator could read as a result.

A failing test or a broken Dockerfile is a result: the run leaves a `fail`/`error` record, the
matrix shows it, and re-running changes nothing until the input changes. A dead letter is the
other kind of failure, the one a later re-run may well fix:

- `retries_exhausted`: transient trouble (engine or registry not answering, push/pull timeouts)
  outlasted the step's retries; the record says `error` with `transient: true`. Keyed by build_id.
- `no_record`: the run failed and left no record at all (the base could not be resolved, the
  run worker died, the record could not be written). Keyed by the Dagster run id, since no
  build_id was ever recorded.

Letters live in `dlq/<key>.json`, written once through the record store (temp file + hard link
locally, a conditional PUT on S3), so a sensor that sees the same run twice writes one letter.
`factory dlq requeue` re-runs the combination and first claims the letter with a marker,
`dlq/<key>.requeued.json`, written once the same way: of two concurrent requeues (a double
click, two operators) exactly one goes ahead. The marker goes through the store's own `dlq` kind
(id `<key>.requeued`), so it needs no new layout entry and works on every store; `letter_keys`
is the list of letters without the markers.

Letters and markers are read as records are (`factory.records.store`): only regular files inside
the store, size-capped, never echoed. `entries` skips an unreadable letter with one warning line
naming it and a count; an unreadable marker still counts as a claim (the letter was requeued).

No Dagster import: the CLI, the sensor and the tests share this module.
"""

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from factory.errors import FactoryError, RecordExistsError
from factory.records.model import CompatibilityRecord, log_tail
from factory.records.store import (
    RecordStore,
    SkipReport,
    check_id,
    parse_model,
    parse_object,
    warn,
)
from factory.safe_json import UnreadableEntryError, printable

DLQ_VERSION = 1
REQUEUED_SUFFIX = ".requeued"  # marker id = letter key + suffix: dlq/<key>.requeued.json
SUMMARY_CHARS = 300
MESSAGE_CHARS = 4000
Reason = Literal["retries_exhausted", "no_record"]


class DeadLetterError(FactoryError):
    """A dead letter is missing, unreadable, or already requeued."""


class UnknownDeadLetterError(DeadLetterError):
    """No dead letter has this key."""


class AlreadyRequeuedError(DeadLetterError):
    """The dead letter was requeued before: requeueing claims it once."""


class DeadLetter(BaseModel):
    """One combination whose run failed for good; the file `dlq/<key>.json`."""

    model_config = ConfigDict(extra="forbid")

    dlq_version: Literal[1] = DLQ_VERSION
    key: str  # the file name: build_id, or run_id when no record exists
    reason: Reason
    build_id: str | None
    run_id: str
    job_name: str | None = None
    manifest_id: str | None
    platform: str | None
    pool: str | None
    stage: str
    error: str  # one line, for listings
    message: str  # the whole message, capped
    transient: bool
    attempts: int
    log_tail: str
    failed_at: str
    record: str | None = None  # uri of the record, when there is one
    error_file: str | None = None  # uri of errors/error-<build_id>.json, when there is one


@dataclass(frozen=True)
class Entry:
    """A dead letter and, once requeued, the marker that says when and how."""

    letter: DeadLetter
    requeued: dict | None

    def as_dict(self) -> dict:
        return {**self.letter.model_dump(mode="json"), "requeued": self.requeued}


def summary(message: str) -> str:
    """The first non-empty line of a message, short enough for a table."""
    for line in message.splitlines():
        if line.strip():
            return line.strip()[:SUMMARY_CHARS]
    return ""


def needs_dead_letter(record: CompatibilityRecord) -> bool:
    """A recorded failure is a dead letter only when it is transient: the retries ran out.

    `fail` (a test failed) and a non-transient `error` (render or build failed) are results.
    """
    return record.status == "error" and record.error is not None and record.error.transient


def letter_for_record(
    record: CompatibilityRecord,
    *,
    run_id: str,
    job_name: str | None,
    failed_at: str,
    record_uri: str | None,
    error_uri: str | None,
    run_log: str = "",
) -> DeadLetter:
    """The dead letter of a transient failure whose final attempt was recorded.

    Its log tail is the record's; when that is empty (a registry that never answered leaves no
    tool output) the run's own log tail is kept instead, so the letter is never mute.
    """
    error = record.error
    if error is None:
        msg = f"record {record.build_id} has no error section: it is not a failure"
        raise DeadLetterError(msg)
    return DeadLetter(
        key=record.build_id,
        reason="retries_exhausted",
        build_id=record.build_id,
        run_id=run_id,
        job_name=job_name,
        manifest_id=record.manifest_id,
        platform=record.platform,
        pool=record.pool,
        stage=error.stage,
        error=summary(error.message),
        message=error.message[:MESSAGE_CHARS],
        transient=error.transient,
        attempts=error.attempts,
        log_tail=error.log_tail or log_tail(run_log),
        failed_at=failed_at,
        record=record_uri,
        error_file=error_uri,
    )


def letter_without_record(
    *,
    run_id: str,
    job_name: str | None,
    manifest_id: str | None,
    platform: str | None,
    pool: str | None,
    stage: str,
    message: str,
    transient: bool,
    attempts: int,
    log_text: str,
    failed_at: str,
) -> DeadLetter:
    """The dead letter of a run that left no record: keyed by its run id."""
    return DeadLetter(
        key=run_id,
        reason="no_record",
        build_id=None,
        run_id=run_id,
        job_name=job_name,
        manifest_id=manifest_id,
        platform=platform,
        pool=pool,
        stage=stage,
        error=summary(message),
        message=message[:MESSAGE_CHARS],
        transient=transient,
        attempts=attempts,
        log_tail=log_tail(log_text),
        failed_at=failed_at,
    )


def write(store: RecordStore, letter: DeadLetter) -> bool:
    """Write the letter once; False when a letter with this key is already there.

    Idempotent on purpose: a sensor may evaluate the same run twice (a restarted daemon, a reset
    cursor), and the first letter written is the one kept.
    """
    if store.get("dlq", letter.key) is not None:
        return False
    try:
        store.put_json("dlq", letter.key, letter.model_dump(mode="json"))
    except RecordExistsError:
        return False  # another evaluation won the race; its letter stands
    return True


def read(store: RecordStore, key: str) -> DeadLetter:
    """The letter with this key; UnknownDeadLetterError names where it looked.

    A letter that is there but cannot be used (not a regular file, too big, not JSON, not a
    dead letter, or filed under another key) is a DeadLetterError naming the file and field.
    """
    shown = printable(key, limit=80)
    try:
        check_id(key)
    except ValueError as exc:  # a key that could not be a file name
        msg = f"no dead letter {shown!r}: {exc}; `factory dlq list` shows the keys"
        raise UnknownDeadLetterError(msg) from None
    try:
        letter = _load(store, key)
    except UnreadableEntryError as exc:
        msg = f"dead letter {exc}: Factory cannot read it; move it out of the store"
        raise DeadLetterError(msg) from None
    if letter is None:
        where = store.where("dlq", key)
        msg = f"no dead letter {shown!r} at {where}; `factory dlq list` shows them"
        raise UnknownDeadLetterError(msg)
    return letter


def _load(store: RecordStore, key: str) -> DeadLetter | None:
    """The checked letter of a valid key, None when absent, else UnreadableEntryError."""
    where = store.where("dlq", key)
    data = store.get("dlq", key)
    if data is None:
        return None
    letter = parse_model(data, where, DeadLetter, "a dead letter")
    if letter.key != key:
        raise UnreadableEntryError(where, "field key: differs from the file name")
    return letter


def letter_keys(store: RecordStore) -> list[str]:
    """The keys of the dead letters (the `dlq` ids that are not requeue markers)."""
    return [k for k in store.list_ids("dlq") if not k.endswith(REQUEUED_SUFFIX)]


def requeued(store: RecordStore, key: str) -> dict | None:
    """The requeue marker of a letter, or None while it waits.

    A marker that is there but unreadable still claims the letter: it comes back as
    `{"unreadable": reason}`, with a warning.
    """
    where = store.where("dlq", key + REQUEUED_SUFFIX)
    try:
        data = store.get("dlq", key + REQUEUED_SUFFIX)
        if data is None:
            return None
        value = parse_object(data, where, "a requeue marker")
    except UnreadableEntryError as exc:
        warn(f"warning: requeue marker {exc}; the letter counts as requeued")
        return {"unreadable": exc.reason}
    except ValueError as exc:  # a key that cannot name a marker
        return {"unreadable": str(exc)}
    return value


def mark_requeued(store: RecordStore, key: str, details: dict) -> str:
    """Claim the letter for a requeue, once; return the marker's uri.

    The store writes the marker once (temp file + hard link, or a conditional PUT), so of two
    concurrent requeues exactly one gets the claim and the other AlreadyRequeuedError.
    """
    read(store, key)  # only an existing letter can be requeued
    try:
        uri, _ = store.put_json("dlq", key + REQUEUED_SUFFIX, {"key": key, **details})
    except RecordExistsError:
        earlier = requeued(store, key) or {}
        when = printable(earlier.get("requeued_at", "?"), limit=40)
        msg = (
            f"dead letter {key} was already requeued at {when}; "
            "a letter is requeued once (its new run is in `factory records` and the UI)"
        )
        raise AlreadyRequeuedError(msg) from None
    return uri


def entries(store: RecordStore, report: SkipReport | None = None) -> list[Entry]:
    """Every readable letter with its requeue marker, oldest failure first.

    An unreadable letter is skipped with a warning naming it (and a count at the end), so one bad
    file does not hide the others.
    """
    own = report is None
    report = report or SkipReport(store.location("dlq"))
    found = []
    for key in letter_keys(store):
        try:
            check_id(key)
            letter = _load(store, key)
        except UnreadableEntryError as exc:
            report.skip(exc)
            continue
        except ValueError as exc:  # a file name that is not a key
            report.skip(UnreadableEntryError(store.where("dlq", key), f"bad name: {exc}"))
            continue
        if letter is not None:
            found.append(Entry(letter, requeued(store, key)))
    if own:
        report.done()
    return sorted(found, key=lambda e: (e.letter.failed_at, e.letter.key))
