"""The matrix report: JSON content (every cell, links, history order) and the static HTML page."""

import json
import re

import pytest

from factory.plan.decisions import RecordIndex, plan
from factory.records.model import EvidenceRef
from factory.records.store import LocalRecordStore
from factory.report.matrix import NOT_LISTED, NOT_RUN, PENDING, Cell, history, matrix_cells
from factory.report.matrix_report import LEGEND, STATUS_STYLES, matrix_html, matrix_json
from factory.store.load import load_store
from tests.unit.plan.test_planning import DIGESTS, record_for
from tests.unit.store_factory import write_store

GENERATED = "2026-12-01T08:00:00.000000Z"


def at(minute: int) -> str:
    return f"2026-11-26T10:{minute:02d}:00.000000Z"


def with_evidence(record, data_dir):
    """The record with evidence URIs where a LocalRecordStore in data_dir would put them."""
    store = LocalRecordStore(data_dir)
    kinds = {"log": "evidence", "sbom": "sbom", "provenance": "provenance"}
    evidence = {
        name: EvidenceRef(uri=store.uri(kind, record.build_id), sha256="0" * 64)
        for name, kind in kinds.items()
    }
    return record.model_copy(update={"evidence": evidence})


@pytest.fixture
def matrix(tmp_path):
    """A store, its plan, and records: a history on llm_factory, a stale web cell."""
    store = load_store(write_store(tmp_path))
    items = plan(store, DIGESTS, RecordIndex(), gpu_available=False)
    by_combo = {(i.manifest_id, i.platform): i for i in items}
    data = tmp_path / "data"
    amd64 = by_combo[("llm_factory", "linux/amd64")]
    arm64 = by_combo[("llm_factory", "linux/arm64")]
    web = by_combo[("web", "linux/amd64")]

    def rec(item, status, minute):
        record = record_for(store, item, status=status)
        return with_evidence(
            record.model_copy(update={"finished_at": at(minute), "started_at": at(minute)}), data
        )

    records = [
        rec(amd64, "fail", 1),
        rec(amd64, "pass", 2),
        rec(arm64, "pass", 1),
        rec(arm64, "error", 2),
        rec(arm64, "pass", 3),
        rec(arm64, "fail", 4),
        rec(web, "pass", 5).model_copy(update={"record_key": "0" * 64}),
    ]
    index = RecordIndex.from_records(records)
    cells = matrix_cells(store, index, items)
    return cells, index, records, LocalRecordStore(data)


def by_cell(report):
    return {(c["manifest_id"], c["platform"]): c for c in report["cells"]}


def test_history_is_newest_first_and_cut_to_n(matrix):
    _, _, records, _ = matrix
    recent = history(records, 3)
    assert [r.status for r in recent[("llm_factory", "linux/arm64")]] == ["fail", "pass", "error"]
    assert [r.status for r in recent[("llm_factory", "linux/amd64")]] == ["pass", "fail"]
    assert history(records, 0)[("web", "linux/amd64")] == []
    with pytest.raises(ValueError, match="0 or more"):
        history(records, -1)


def test_json_has_every_cell_with_status_stale_and_image(matrix):
    cells, index, records, store = matrix
    report = matrix_json(
        cells, index, history=3, records=records, record_store=store, generated_at=GENERATED
    )
    json.dumps(report)  # serializable as is
    assert report["generated_at"] == GENERATED
    assert report["platforms"] == ["linux/amd64", "linux/arm64", "linux/amd64+gpu"]
    got = by_cell(report)
    assert len(got) == len(cells) == 6
    assert {k: (c["status"], c["stale"]) for k, c in got.items()} == {
        ("llm_factory", "linux/amd64"): ("pass", False),
        ("llm_factory", "linux/arm64"): ("fail", False),
        ("llm_factory", "linux/amd64+gpu"): (NOT_RUN, False),
        ("web", "linux/amd64"): ("pass", True),
        ("web", "linux/arm64"): (NOT_LISTED, False),
        ("web", "linux/amd64+gpu"): (NOT_LISTED, False),
    }
    arm = got[("llm_factory", "linux/arm64")]
    newest = index.latest[("llm_factory", "linux/arm64")]
    assert arm["build_id"] == newest.build_id and arm["finished_at"] == at(4)
    assert arm["image"] == f"{newest.image.ref}@{newest.image.digest}"
    assert report["summary"] == {
        "combinations": 4,
        "pass": 2,
        "fail": 1,
        "error": 0,
        NOT_RUN: 1,
        PENDING: 0,
        "stale": 1,
    }


def test_json_history_is_newest_first_with_build_ids(matrix):
    cells, index, records, store = matrix
    report = matrix_json(cells, index, history=3, records=records, record_store=store)
    arm = by_cell(report)[("llm_factory", "linux/arm64")]
    expected = history(records, 3)[("llm_factory", "linux/arm64")]
    assert [(h["status"], h["finished_at"], h["build_id"]) for h in arm["history"]] == [
        (r.status, r.finished_at, r.build_id) for r in expected
    ]
    assert [h["finished_at"] for h in arm["history"]] == [at(4), at(3), at(2)]
    assert arm["history"][0]["build_id"] == arm["build_id"]
    assert by_cell(report)[("web", "linux/arm64")]["history"] == []
    # Without all records, the history is what the index knows: the newest record.
    only_index = by_cell(matrix_json(cells, index, history=3))[("llm_factory", "linux/arm64")]
    assert [h["build_id"] for h in only_index["history"]] == [arm["build_id"]]


def test_json_links_point_at_the_record_and_its_evidence(matrix, tmp_path):
    cells, index, records, store = matrix
    report = matrix_json(cells, index, records=records, record_store=store)
    amd = by_cell(report)[("llm_factory", "linux/amd64")]
    build_id = amd["build_id"]
    data = (tmp_path / "data").resolve()
    assert amd["links"] == {
        "log": (data / "evidence" / f"{build_id}.log").as_uri(),
        "sbom": (data / "sbom" / f"{build_id}.cdx.json").as_uri(),
        "provenance": (data / "provenance" / f"{build_id}.intoto.json").as_uri(),
        "record": (data / "records" / f"{build_id}.json").as_uri(),
    }
    assert amd["history"][0]["record"] == amd["links"]["record"]
    assert set(by_cell(report)[("llm_factory", "linux/amd64+gpu")]["links"].values()) == {None}
    # Without a record store the record's own file is unknown; its evidence links still show.
    bare = by_cell(matrix_json(cells, index, records=records))[("llm_factory", "linux/amd64")]
    assert bare["links"]["record"] is None and bare["links"]["log"] == amd["links"]["log"]


def cell_tag(page: str, manifest_id: str, platform: str) -> str:
    """The opening <td> tag of one cell, found by its title."""
    match = re.search(rf'<td class="([^"]*)" title="{re.escape(manifest_id)} on {platform}', page)
    assert match, (manifest_id, platform)
    return match.group(1)


def test_html_colours_each_status_and_links_evidence(matrix):
    cells, index, records, store = matrix
    page = matrix_html(
        cells, index, history=3, records=records, record_store=store, generated_at=GENERATED
    )
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # Every status has its colour in the stylesheet and a legend entry.
    for status, (css_class, background, _) in STATUS_STYLES.items():
        assert f".{css_class}{{background-color:{background}" in page, status
    assert [s for s, _ in LEGEND] == list(STATUS_STYLES)
    assert cell_tag(page, "llm_factory", "linux/amd64") == "cell s-pass"
    assert cell_tag(page, "llm_factory", "linux/arm64") == "cell s-fail"
    assert cell_tag(page, "llm_factory", "linux/amd64\\+gpu") == "cell s-notrun"
    assert cell_tag(page, "web", "linux/amd64") == "cell s-pass stale"
    assert STATUS_STYLES["pass"][1] == "#c8e6c9"  # green
    assert STATUS_STYLES["fail"][1] == "#ffcdd2"  # red
    assert STATUS_STYLES["error"][1] == "#ffe0b2"  # orange
    assert STATUS_STYLES[NOT_RUN][1] == "#e0e0e0"  # grey
    # Links to evidence, SBOM, provenance and record of the newest build, and history badges.
    report = matrix_json(cells, index, history=3, records=records, record_store=store)
    amd = by_cell(report)[("llm_factory", "linux/amd64")]
    for kind, label in (("log", "evidence"), ("sbom", "SBOM"), ("record", "record")):
        assert f'<a href="{amd["links"][kind]}">{label}</a>' in page
    assert page.count('class="badge s-') == sum(len(c["history"]) for c in report["cells"])
    assert f"Generated {GENERATED}" in page
    assert "<strong>1</strong> stale" in page and "<strong>2</strong> pass" in page


def test_html_is_self_contained(matrix):
    cells, index, records, store = matrix
    page = matrix_html(cells, index, records=records, record_store=store)
    for external in ("<script", "<link", " src=", "@import", "http://", "https://"):
        assert external not in page, external


def test_html_escapes_everything_even_what_validation_forbids():
    hostile = '<script>alert("x")</script>'
    cells = [
        Cell(
            hostile,
            "linux/amd64",
            "pass",
            False,
            build_id='"><img onerror=1>',
            image='reg/x:y@sha256:"<b>',
            finished_at="<i>now</i>",
        ),
        Cell(hostile, "linux/arm64", "<b>weird</b>", True),
    ]
    page = matrix_html(cells, RecordIndex(), generated_at="<u>t</u>")
    assert "<script>" not in page and "<img" not in page
    assert "<b>" not in page and "<i>" not in page and "<u>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;b&gt;weird&lt;/b&gt;" in page
    # An unknown status still renders, with its own neutral style.
    assert 'class="cell s-unknown stale"' in page


def test_html_never_links_a_non_file_uri(matrix):
    cells, index, records, store = matrix
    amd = index.latest[("llm_factory", "linux/amd64")]
    tampered = amd.model_copy(
        update={
            "evidence": {
                **amd.evidence,
                "log": EvidenceRef(uri="javascript:alert(1)", sha256="0" * 64),
            }
        }
    )
    index.latest[("llm_factory", "linux/amd64")] = tampered
    page = matrix_html(cells, index, records=[*records, tampered], record_store=store)
    assert 'href="javascript:' not in page
    assert "<span>evidence</span>" in page
