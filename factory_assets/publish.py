"""The multi-arch index asset: a manifest's release tag once every platform it lists passed."""

import dagster as dg

from factory.errors import FactoryError
from factory.registry.publish import publish, publish_plan
from factory_assets.automation import RESULTS_CONDITION
from factory_assets.matrix import RECORD_DEPS, current_plan
from resources import DockerBuilder, ManifestStore, RecordStore, Registry


@dg.asset(
    name="multiarch_index",
    group_name="matrix",
    kinds={"docker"},
    deps=RECORD_DEPS,
    description="Publishes `factory/<manifest>:release-<hash>` and `:latest` multi-arch indexes "
    "for manifests whose every platform passed for the same inputs; partial ones are shown, "
    "never published.",
    automation_condition=RESULTS_CONDITION,
)
def multiarch_index(
    context: dg.AssetExecutionContext,
    manifest_store: ManifestStore,
    record_store: RecordStore,
    docker_builder: DockerBuilder,
    registry: Registry,
) -> dg.MaterializeResult:
    store = manifest_store.load()
    index, items = current_plan(context, store, record_store.open().index, docker_builder)
    if items is None:
        msg = "cannot decide what to publish without the current plan (see the warning above)"
        raise dg.Failure(description=msg)
    rows = []
    for decision in publish_plan(store, index, items):
        row = {
            "manifest": decision.manifest_id,
            "status": decision.status,
            "tag": decision.release_tag or "",
            "index_digest": "",
            "reasons": "; ".join(decision.reasons),
        }
        if decision.ready:
            try:
                row["index_digest"] = publish(decision, registry.client())
            except FactoryError as exc:
                row["status"], row["reasons"] = "error", str(exc)
        rows.append(row)
    published = sum(1 for r in rows if r["index_digest"])
    context.log.info(f"published {published} of {len(rows)} manifests")
    return dg.MaterializeResult(
        metadata={
            "indexes": dg.MetadataValue.table(
                records=[dg.TableRecord(r) for r in rows],
                schema=dg.TableSchema(columns=[dg.TableColumn(k, "string") for k in rows[0]])
                if rows
                else None,
            ),
            "published": published,
            "partial": sum(1 for r in rows if r["status"] == "partial"),
        }
    )
