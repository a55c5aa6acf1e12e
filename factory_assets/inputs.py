"""Per-platform observable sources: each combination's inputs as a data version.

The data version of partition `m` of `<slug>/inputs` is the combination's record key (template,
fragments, base per-platform digest, test suites). The sensors record an observation when it
changes, and observing the source from the UI recomputes every partition, so Dagster marks exactly
the affected partitions of the chain stale.
"""

import dagster as dg

from factory.plan.decisions import RecordIndex, plan, resolve_base_digests
from factory.platforms import PLATFORMS, Platform
from factory_assets.partitions import PARTITIONS
from resources import ManifestStore


def inputs_key(platform: Platform) -> dg.AssetKey:
    return dg.AssetKey([platform.slug, "inputs"])


def build_inputs_source(platform: Platform) -> dg.SourceAsset:
    @dg.observable_source_asset(
        key=inputs_key(platform),
        partitions_def=PARTITIONS[platform.slug],
        group_name=platform.slug,
        description=f"What each manifest's {platform.name} image is made from, as a data version.",
    )
    def inputs(manifest_store: ManifestStore) -> dg.DataVersionsByPartition:
        store = manifest_store.load()
        combos = store.combinations(platforms=[platform.name])
        digests = resolve_base_digests(store, combos)
        items = plan(store, digests, RecordIndex(), gpu_available=True, platforms=[platform.name])
        return dg.DataVersionsByPartition(
            {i.manifest_id: dg.DataVersion(i.record_key) for i in items}
        )

    return inputs


INPUT_SOURCES = [build_inputs_source(p) for p in PLATFORMS]
