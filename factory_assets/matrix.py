"""The compatibility matrix asset: manifest x platform, downstream of every platform's records."""

import dagster as dg
import pandas as pd

from factory.matrix import matrix_cells, matrix_table
from factory.planning import PlanItem, RecordIndex
from factory.platforms import PLATFORMS
from resources import DockerBuilder, ManifestStore, RecordStore


@dg.asset(
    name="compatibility_matrix",
    group_name="matrix",
    kinds={"pandas"},
    deps=[
        dg.AssetDep(
            dg.AssetKey([p.slug, "compatibility_record"]),
            partition_mapping=dg.AllPartitionMapping(),
        )
        for p in PLATFORMS
    ],
    description="Manifest x platform status from the newest compatibility records.",
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
    index = RecordIndex.from_records(record_store.open().records())
    gpu = docker_builder.gpu_available()
    # Without a plan the matrix cannot tell stale cells; it still marks GPU cells not run here.
    plan_items = [
        PlanItem(m, p.name, p.pool, "skip", False, ["no_executor"], "", "", "normal")
        for m, p in store.combinations()
        if p.gpu and not gpu
    ]
    cells = matrix_cells(store, index, plan_items)
    header, rows = matrix_table(cells)
    frame = pd.DataFrame(rows, columns=header).set_index("manifest")
    counts = {s: sum(1 for c in cells if c.status == s) for s in ("pass", "fail", "error")}
    context.log.info("\n" + frame.to_string())
    return dg.Output(
        frame,
        metadata={
            "matrix": dg.MetadataValue.table(
                records=[dg.TableRecord(dict(zip(header, row, strict=True))) for row in rows],
                schema=dg.TableSchema(columns=[dg.TableColumn(h, "string") for h in header]),
            ),
            "combinations": sum(1 for c in cells if c.status != "-"),
            **{f"{s}_count": n for s, n in counts.items()},
        },
    )
