"""The records a gc plan reads: from a list (tests, small stores), or from the records index.

`plan_gc` (factory/records/retention.py) asks a source five questions, so that with the index it
reads what
the registry and the calendar make relevant instead of the whole history:

- `manifests()`: every manifest with a record (one row per combination);
- `for_images(manifest, tags, digests)`: the records naming one of the build tags the registry
  still holds, or one of the digests a release pins, plus the newest record per platform;
- `released(manifest, digests)`: build ids of records whose image a published index pins;
- `for_evidence(cutoff)`: per manifest, records older than `cutoff` whose evidence files are
  still there (gc marks the ones it removed), plus the newest record per platform;
- `quarantined()`: per manifest, the records whose image went to quarantine.
"""

from collections.abc import Iterable
from datetime import datetime

from factory.records.model import CompatibilityRecord, record_order
from factory.records.store import record_problem
from factory.safe_json import printable

ISO = "%Y-%m-%dT%H:%M:%S.%fZ"


class RecordList:
    """Every record in memory; unusable ones are left out with a warning."""

    def __init__(self, records: Iterable[CompatibilityRecord]):
        self.warnings: list[str] = []
        self.by_manifest: dict[str, list[CompatibilityRecord]] = {}
        for record in records:
            problem = record_problem(record)
            if problem:
                self.warnings.append(
                    f"record {printable(record.build_id, limit=80)} left out: {problem}; "
                    "its images and files are kept"
                )
                continue
            self.by_manifest.setdefault(record.manifest_id, []).append(record)

    def manifests(self) -> list[str]:
        return sorted(self.by_manifest)

    def for_images(self, manifest_id: str, tags: set[str], digests: set[str]) -> list:
        return self.by_manifest.get(manifest_id, [])

    def released(self, manifest_id: str, digests: set[str]) -> list[str]:
        return [
            r.build_id
            for r in sorted(self.by_manifest.get(manifest_id, []), key=record_order)
            if r.image is not None and r.image.digest in digests
        ]

    def for_evidence(self, cutoff: datetime) -> dict[str, list[CompatibilityRecord]]:
        return self.by_manifest

    def quarantined(self) -> dict[str, list[CompatibilityRecord]]:
        return {
            m: [r for r in records if r.quarantine and r.quarantine.ref]
            for m, records in self.by_manifest.items()
        }


def _merge(*groups: Iterable[CompatibilityRecord]) -> list[CompatibilityRecord]:
    """One object per build id: `plan_gc` tells the newest record by identity."""
    merged: dict[str, CompatibilityRecord] = {}
    for group in groups:
        for record in group:
            merged.setdefault(record.build_id, record)
    return sorted(merged.values(), key=record_order)


class IndexedRecords:
    """The records index (factory/records/index.py): light records, chosen by SQL."""

    def __init__(self, index):
        self.index = index
        self.warnings: list[str] = []
        self._newest: dict[str, list[CompatibilityRecord]] | None = None

    def _newest_of(self, manifest_id: str) -> list[CompatibilityRecord]:
        if self._newest is None:
            self._newest = {}
            for record in self.index.newest_summaries():
                self._newest.setdefault(record.manifest_id, []).append(record)
        return self._newest.get(manifest_id, [])

    def manifests(self) -> list[str]:
        return self.index.manifest_ids()

    def for_images(self, manifest_id: str, tags: set[str], digests: set[str]) -> list:
        named = self.index.summaries(manifest_ids=[manifest_id], image_tags=tags) if tags else []
        pinned = (
            self.index.summaries(manifest_ids=[manifest_id], image_digests=digests)
            if digests
            else []
        )
        return _merge(self._newest_of(manifest_id), named, pinned)

    def released(self, manifest_id: str, digests: set[str]) -> list[str]:
        if not digests:
            return []
        found = self.index.summaries(manifest_ids=[manifest_id], image_digests=digests)
        return [r.build_id for r in found]

    def for_evidence(self, cutoff: datetime) -> dict[str, list[CompatibilityRecord]]:
        old = self.index.summaries(finished_before=cutoff.strftime(ISO), evidence_present=True)
        by_manifest: dict[str, list[CompatibilityRecord]] = {}
        for record in old:
            by_manifest.setdefault(record.manifest_id, []).append(record)
        return {m: _merge(self._newest_of(m), rows) for m, rows in sorted(by_manifest.items())}

    def quarantined(self) -> dict[str, list[CompatibilityRecord]]:
        by_manifest: dict[str, list[CompatibilityRecord]] = {}
        for record in self.index.summaries(quarantined=True):
            by_manifest.setdefault(record.manifest_id, []).append(record)
        return by_manifest
