"""The compatibility matrix asset: manifest x platform, downstream of every platform's records."""

from pathlib import Path

import dagster as dg

from factory.env_numbers import env_int
from factory.errors import FactoryError
from factory.plan.decisions import RecordIndex, plan_store
from factory.platforms import PLATFORMS
from factory.records.index import finished_after
from factory.report.matrix import history, matrix_cells, matrix_table
from factory.report.metrics import DEFAULT_WINDOW
from factory.store.load import LoadedStore
from factory_assets.automation import RESULTS_CONDITION
from factory_assets.queue_metrics import queue_metadata, status_report
from resources import DockerBuilder, ManifestStore, RecordStore

# How many earlier results each cell shows next to its current status.
HISTORY = env_int(
    "FACTORY_MATRIX_HISTORY", 5, low=1, high=100, what="how many earlier results a cell shows"
)
RECORD_DEPS = [
    dg.AssetDep(
        dg.AssetKey([p.slug, "compatibility_record"]),
        partition_mapping=dg.AllPartitionMapping(),
    )
    for p in PLATFORMS
]
MARKS = {"pass": "✔", "fail": "✘", "error": "!"}


def current_plan(
    context: dg.AssetExecutionContext,
    store: LoadedStore,
    records_index,
    docker_builder: DockerBuilder,
):
    """(index, plan items) — or the index alone when the registry or engine does not answer, so
    the matrix still shows the records (without marking stale cells). `records_index` is the
    record store's `factory.records.index.RecordsIndex`: rows per combination, not history."""
    try:
        gpu = docker_builder.gpu_available()
        return plan_store(store, RecordIndex.from_index(records_index), gpu_available=gpu)
    except FactoryError as exc:
        context.log.warning(f"matrix without the current plan (stale cells unmarked): {exc}")
        return RecordIndex.from_index(records_index), None


@dg.asset(
    name="compatibility_matrix",
    group_name="matrix",
    kinds={"pandas"},
    deps=RECORD_DEPS,
    description="Manifest x platform status from the newest compatibility records.",
    # Follows new records whatever launched them (factory_assets/automation.py).
    automation_condition=RESULTS_CONDITION,
)
def compatibility_matrix(
    context: dg.AssetExecutionContext,
    manifest_store: ManifestStore,
    record_store: RecordStore,
    docker_builder: DockerBuilder,
) -> dg.Output:
    """Reads the record store, not the upstream outputs: records are the source of truth, and a
    combination whose newest attempt failed has a record but no materialized record asset."""
    store = manifest_store.load()
    opened = record_store.open()
    index, items = current_plan(context, store, opened.index, docker_builder)
    records = opened.index.select(newest_per_combination=HISTORY)
    cells = matrix_cells(store, index, items)
    header, rows = matrix_table(cells)
    import pandas as pd  # 0.4 s to import: only the process that materializes the matrix pays it

    frame = pd.DataFrame(rows, columns=header).set_index("manifest")
    recent = history(records, HISTORY)
    trend_rows = [
        {
            "manifest": row[0],
            **{
                platform.name: " ".join(
                    MARKS.get(r.status, "?") for r in recent.get((row[0], platform.name), [])
                )
                or "-"
                for platform in PLATFORMS
            },
        }
        for row in rows
    ]
    counts = {s: sum(1 for c in cells if c.status == s) for s in ("pass", "fail", "error")}
    context.log.info("\n" + frame.to_string())
    columns = [dg.TableColumn(h, "string") for h in header]
    return dg.Output(
        frame,
        metadata={
            "matrix": dg.MetadataValue.table(
                records=[dg.TableRecord(dict(zip(header, row, strict=True))) for row in rows],
                schema=dg.TableSchema(columns=columns),
            ),
            f"last_{HISTORY}_results": dg.MetadataValue.table(
                records=[dg.TableRecord(r) for r in trend_rows],
                schema=dg.TableSchema(columns=columns),
            ),
            **queue_metadata(
                status_report(
                    context.instance,
                    opened.index.figures(finished_after=finished_after(DEFAULT_WINDOW)),
                    Path(record_store.data_dir),
                )
            ),
            "combinations": sum(1 for c in cells if c.status != "-"),
            "stale": sum(1 for c in cells if c.stale),
            **{f"{s}_count": n for s, n in counts.items()},
        },
    )
