"""The matrix people look at: JSON for tools and a static, self-contained HTML page for humans.

Both come from the same cells (`factory.report.matrix.matrix_cells`) and the same records, and the
HTML is rendered from the JSON document, so the two can never disagree. The page has no scripts and
no external assets: it is opened from disk (`file://`), attached to a ticket or served as is, and
every value in it (ids, refs, URIs, times) is escaped, because records are files anyone with write
access to the data dir can edit.
"""

import html
from collections import Counter
from collections.abc import Iterable
from urllib.parse import urlparse

from factory.plan.decisions import RecordIndex
from factory.platforms import PLATFORMS
from factory.records.model import CompatibilityRecord, utc_now
from factory.records.store import RecordStore
from factory.report.matrix import NOT_LISTED, NOT_RUN, PENDING, Cell
from factory.report.matrix import history as last_results

REPORT_VERSION = 1
DEFAULT_HISTORY = 5
# The kinds of file a cell links to, in the order the page shows them.
LINK_KINDS = ("log", "sbom", "provenance", "record")
LINK_LABELS = {"log": "evidence", "sbom": "SBOM", "provenance": "provenance", "record": "record"}
# Links point at stored files; anything else in a (hand-edited) record is shown, never linked,
# so a `javascript:` URI cannot become a live link on the page.
SAFE_SCHEMES = ("file", "s3", "http", "https")

# status -> (css class, background, text colour): the legend and the table use this one table.
STATUS_STYLES: dict[str, tuple[str, str, str]] = {
    "pass": ("s-pass", "#c8e6c9", "#1b5e20"),
    "fail": ("s-fail", "#ffcdd2", "#b71c1c"),
    "error": ("s-error", "#ffe0b2", "#e65100"),
    NOT_RUN: ("s-notrun", "#e0e0e0", "#424242"),
    PENDING: ("s-pending", "#fafafa", "#616161"),
    NOT_LISTED: ("s-na", "#ffffff", "#bdbdbd"),
}
UNKNOWN_STYLE = ("s-unknown", "#f3e5f5", "#4a148c")
LEGEND = (
    ("pass", "every test suite passed"),
    ("fail", "a test suite failed"),
    ("error", "render, build or infrastructure failed"),
    (NOT_RUN, "no executor here (GPU)"),
    (PENDING, "listed, never recorded"),
    (NOT_LISTED, "the manifest does not list this platform"),
)


def _record_links(record: CompatibilityRecord, record_store: RecordStore | None) -> dict:
    """kind -> URI (or None) of a record's own file and the evidence it names."""
    links: dict[str, str | None] = {}
    for kind in ("log", "sbom", "provenance"):
        ref = record.evidence.get(kind)
        links[kind] = ref.uri if ref is not None else None
    links["record"] = record_store.uri("record", record.build_id) if record_store else None
    return links


def _result(record: CompatibilityRecord, record_store: RecordStore | None) -> dict:
    return {
        "status": record.status,
        "finished_at": record.finished_at,
        "build_id": record.build_id,
        "record": record_store.uri("record", record.build_id) if record_store else None,
    }


def matrix_json(
    cells: list[Cell],
    records_index: RecordIndex,
    *,
    history: int = DEFAULT_HISTORY,
    records: Iterable[CompatibilityRecord] | None = None,
    record_store: RecordStore | None = None,
    generated_at: str | None = None,
) -> dict:
    """The matrix as a JSON-ready dict: every cell, its links and its last `history` results.

    `records` are all the records (for the history); without them each cell's history is only
    the newest record the index holds. `record_store` gives the URI of each record's own file;
    without it `links.record` is null (evidence links come from the record itself).
    """
    all_records = list(records) if records is not None else list(records_index.latest.values())
    recent = last_results(all_records, history)
    by_build = {r.build_id: r for r in all_records}
    by_build.update({r.build_id: r for r in records_index.latest.values()})
    out_cells = []
    for cell in cells:
        record = by_build.get(cell.build_id) if cell.build_id else None
        links = (
            _record_links(record, record_store) if record is not None else dict.fromkeys(LINK_KINDS)
        )
        out_cells.append(
            {
                "manifest_id": cell.manifest_id,
                "platform": cell.platform,
                "status": cell.status,
                "stale": cell.stale,
                "label": cell.label(),
                "build_id": cell.build_id,
                "image": cell.image,
                "finished_at": cell.finished_at,
                "links": {kind: links[kind] for kind in LINK_KINDS},
                "history": [
                    _result(r, record_store)
                    for r in recent.get((cell.manifest_id, cell.platform), [])
                ],
            }
        )
    return {
        "report_version": REPORT_VERSION,
        "generated_at": generated_at or utc_now(),
        "platforms": [p.name for p in PLATFORMS],
        "history": history,
        "summary": summary(cells),
        "cells": out_cells,
    }


def summary(cells: list[Cell]) -> dict[str, int]:
    """Counts per status over listed combinations, plus how many are stale."""
    listed = [c for c in cells if c.status != NOT_LISTED]
    counts = Counter(c.status for c in listed)
    return {
        "combinations": len(listed),
        **{status: counts.get(status, 0) for status in ("pass", "fail", "error", NOT_RUN, PENDING)},
        **{s: n for s, n in sorted(counts.items()) if s not in STATUS_STYLES},
        "stale": sum(1 for c in listed if c.stale),
    }


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _style(status: str) -> tuple[str, str, str]:
    return STATUS_STYLES.get(status, UNKNOWN_STYLE)


def _href(uri: str | None) -> str | None:
    """The URI if it is safe to link, else None."""
    if not uri or urlparse(uri).scheme not in SAFE_SCHEMES:
        return None
    return uri


def _link(uri: str | None, text: str, *, css: str = "", title: str = "") -> str:
    attrs = (f' class="{_e(css)}"' if css else "") + (f' title="{_e(title)}"' if title else "")
    href = _href(uri)
    if href is None:
        return f"<span{attrs}>{_e(text)}</span>"
    return f'<a href="{_e(href)}"{attrs}>{_e(text)}</a>'


def _css() -> str:
    rules = [
        "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#212121}",
        "table{border-collapse:collapse}",
        "th,td{border:1px solid #bdbdbd;padding:.4rem .6rem;vertical-align:top;text-align:left}",
        "td.cell{min-width:13rem}",
        ".status{font-weight:600}",
        ".meta{font-size:.8rem;color:#424242}",
        ".links a,.links span{margin-right:.5rem;font-size:.85rem}",
        ".flag{font-size:.75rem;font-weight:600;border:1px solid currentColor;border-radius:3px;"
        "padding:0 .25rem;margin-left:.3rem}",
        ".stale{background-image:repeating-linear-gradient(45deg,transparent 0 8px,"
        "rgba(0,0,0,.07) 8px 16px)}",
        ".s-pending{border-style:dashed}",
        ".badges{margin-top:.3rem}",
        ".badge{display:inline-block;width:1rem;height:1rem;line-height:1rem;text-align:center;"
        "font-size:.65rem;font-weight:700;border-radius:2px;margin-right:2px;"
        "text-decoration:none;border:1px solid rgba(0,0,0,.2)}",
        ".legend span.key{display:inline-block;padding:.1rem .4rem;margin-right:.3rem;"
        "border:1px solid #bdbdbd}",
        "ul.legend,ul.summary{list-style:none;padding:0}",
        "ul.legend li,ul.summary li{display:inline-block;margin-right:1rem}",
    ]
    for css_class, background, colour in [*STATUS_STYLES.values(), UNKNOWN_STYLE]:
        rules.append(f".{css_class}{{background-color:{background};color:{colour}}}")
    return "\n".join(rules)


def _cell_html(cell: dict) -> str:
    status = cell["status"]
    css_class = _style(status)[0]
    classes = f"cell {css_class}" + (" stale" if cell["stale"] else "")
    if status == NOT_LISTED:
        return f'<td class="{classes}" title="not listed">{_e(NOT_LISTED)}</td>'
    parts = [f'<span class="status">{_e(status)}</span>']
    if cell["stale"]:
        parts.append(
            '<span class="flag" title="the newest record is for older inputs">stale</span>'
        )
    meta = []
    if cell["finished_at"]:
        meta.append(_e(cell["finished_at"]))
    if cell["build_id"]:
        meta.append(f"build {_e(cell['build_id'][:8])}")
    if meta:
        parts.append(f'<div class="meta">{" &middot; ".join(meta)}</div>')
    if cell["image"]:
        short = cell["image"].rsplit("@", 1)[-1][:19]
        parts.append(f'<div class="meta" title="{_e(cell["image"])}">{_e(short)}</div>')
    links = [
        _link(cell["links"][kind], LINK_LABELS[kind]) for kind in LINK_KINDS if cell["links"][kind]
    ]
    if links:
        parts.append(f'<div class="links">{"".join(links)}</div>')
    badges = []
    for result in cell["history"]:
        css = "badge " + _style(result["status"])[0]
        title = f"{result['status']} {result['finished_at']} build {result['build_id']}"
        badges.append(
            _link(result.get("record"), result["status"][:1].upper(), css=css, title=title)
        )
    if badges:
        parts.append(f'<div class="badges" title="newest first">{"".join(badges)}</div>')
    title = f"{cell['manifest_id']} on {cell['platform']}: {cell['label']}"
    return f'<td class="{classes}" title="{_e(title)}">{"".join(parts)}</td>'


def render_html(report: dict, *, title: str = "Factory compatibility matrix") -> str:
    """The page for a `matrix_json` document."""
    platforms = report["platforms"]
    rows: dict[str, dict[str, dict]] = {}
    for cell in report["cells"]:
        rows.setdefault(cell["manifest_id"], {})[cell["platform"]] = cell
    head = "".join(f"<th>{_e(p)}</th>" for p in platforms)
    body = []
    for manifest_id, by_platform in rows.items():
        tds = "".join(
            _cell_html(by_platform[p])
            if p in by_platform
            else f'<td class="cell s-na">{_e(NOT_LISTED)}</td>'
            for p in platforms
        )
        body.append(f"<tr><th>{_e(manifest_id)}</th>{tds}</tr>")
    counts = report["summary"]
    summary_items = "".join(
        f"<li><strong>{_e(n)}</strong> {_e(name)}</li>" for name, n in counts.items()
    )
    legend = "".join(
        f'<li><span class="key {_style(status)[0]}">{_e(status)}</span>{_e(meaning)}</li>'
        for status, meaning in LEGEND
    )
    legend += (
        '<li><span class="key stale">stale</span>the newest record is for older inputs</li>'
        f"<li>badges: the last {_e(report['history'])} results, newest first</li>"
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{_e(title)}</title>",
            f"<style>\n{_css()}\n</style>",
            "</head>",
            "<body>",
            f"<h1>{_e(title)}</h1>",
            f'<p class="generated">Generated {_e(report["generated_at"])} (UTC)</p>',
            f'<ul class="summary">{summary_items}</ul>',
            f'<table class="matrix"><thead><tr><th>manifest</th>{head}</tr></thead>',
            f"<tbody>{''.join(body)}</tbody></table>",
            f'<h2>Legend</h2><ul class="legend">{legend}</ul>',
            "</body>",
            "</html>",
            "",
        ]
    )


def matrix_html(cells: list[Cell], records_index: RecordIndex, **options) -> str:
    """A self-contained HTML page of the matrix; the arguments are `matrix_json`'s."""
    return render_html(matrix_json(cells, records_index, **options))
