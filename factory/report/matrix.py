"""The compatibility matrix: manifest x platform, from the newest records and the current plan."""

from collections.abc import Iterable
from dataclasses import dataclass

from factory.plan.decisions import PlanItem, RecordIndex
from factory.platforms import PLATFORMS
from factory.records.model import CompatibilityRecord
from factory.store.load import LoadedStore

NOT_LISTED = "-"
NOT_RUN = "not run"  # no executor for this platform here (GPU)
PENDING = "pending"  # listed, never recorded


@dataclass(frozen=True)
class Cell:
    manifest_id: str
    platform: str
    status: str  # pass | fail | error | not run | pending | -
    stale: bool  # the newest record is for other inputs than the store's current ones
    build_id: str | None = None
    image: str | None = None
    finished_at: str | None = None

    def label(self) -> str:
        return f"{self.status} (stale)" if self.stale else self.status


def matrix_cells(
    store: LoadedStore, records: RecordIndex, plan_items: list[PlanItem] | None = None
) -> list[Cell]:
    """One cell per manifest x platform (platforms a manifest does not list are `-`)."""
    by_combo = {(i.manifest_id, i.platform): i for i in plan_items or []}
    cells = []
    for manifest_id in sorted(store.model.manifests):
        listed = store.model.manifests[manifest_id].platforms
        for platform in PLATFORMS:
            if platform.name not in listed:
                cells.append(Cell(manifest_id, platform.name, NOT_LISTED, False))
                continue
            item = by_combo.get((manifest_id, platform.name))
            last = records.latest.get((manifest_id, platform.name))
            if item is not None and "no_executor" in item.reasons:
                cells.append(Cell(manifest_id, platform.name, NOT_RUN, False))
            elif last is None:
                cells.append(Cell(manifest_id, platform.name, PENDING, False))
            else:
                stale = item is not None and item.record_key != last.record_key
                cells.append(
                    Cell(
                        manifest_id,
                        platform.name,
                        last.status,
                        stale,
                        last.build_id,
                        f"{last.image.ref}@{last.image.digest}"
                        if last.image and last.image.digest
                        else None,
                        last.finished_at,
                    )
                )
    return cells


def history(
    records: Iterable[CompatibilityRecord], n: int
) -> dict[tuple[str, str], list[CompatibilityRecord]]:
    """The newest `n` records of each (manifest_id, platform), newest first.

    Ordered by (finished_at, build_id) like `RecordIndex`, so the first entry of a combination's
    history is the record its cell shows. A cell's trend (flaky, newly broken, fixed) needs the
    attempts before the newest one, which the index alone does not keep.
    """
    if n < 0:
        msg = f"history length must be 0 or more, got {n}"
        raise ValueError(msg)
    by_combo: dict[tuple[str, str], list[CompatibilityRecord]] = {}
    for record in records:
        by_combo.setdefault((record.manifest_id, record.platform), []).append(record)
    return {
        combo: sorted(found, key=lambda r: (r.finished_at, r.build_id), reverse=True)[:n]
        for combo, found in by_combo.items()
    }


def matrix_table(cells: list[Cell]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of manifest x platform labels."""
    header = ["manifest", *[p.name for p in PLATFORMS]]
    rows: dict[str, dict[str, str]] = {}
    for cell in cells:
        rows.setdefault(cell.manifest_id, {})[cell.platform] = cell.label()
    return header, [[m, *[rows[m].get(p.name, NOT_LISTED) for p in PLATFORMS]] for m in rows]


def format_text(cells: list[Cell]) -> str:
    header, rows = matrix_table(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    counts: dict[str, int] = {}
    for c in cells:
        if c.status != NOT_LISTED:
            counts[c.status] = counts.get(c.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return "\n".join(
        [
            line(header),
            line(["-" * w for w in widths]),
            *map(line, rows),
            "",
            f"{sum(counts.values())} combinations: {summary}",
        ]
    )
