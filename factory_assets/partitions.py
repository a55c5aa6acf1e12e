"""One dynamic partitions definition per platform: its keys are the manifest ids listing it.

Only valid combinations exist as partitions, so "backfill all" of a platform never touches a
manifest that does not support it.
"""

import dagster as dg

from factory.platforms import PLATFORMS

PARTITIONS: dict[str, dg.DynamicPartitionsDefinition] = {
    p.slug: dg.DynamicPartitionsDefinition(name=f"manifests_{p.slug}") for p in PLATFORMS
}


def partitions_name(slug: str) -> str:
    return f"manifests_{slug}"
