"""Writing the repo's pool limits into the Dagster instance at start-up.

Pool limits live in the instance's database, not in `dagster.yaml`: `dagster instance concurrency
set <pool> <n>` writes them there. Doing the same from the project's start-up (`factory run`,
`make dev`) means every way a run is launched (UI, sensor, backfill, CLI) queues against the limits
defined once in `factory.pools`, and a new or wiped instance never silently falls back to
`concurrency.pools.default_limit`.
"""

import sys
from collections.abc import Mapping

import dagster as dg

from factory.errors import FactoryError
from factory.pools import pool_limits


def current_pool_limits(instance: dg.DagsterInstance) -> dict[str, int]:
    """The limits the instance holds now, pool -> slots (pools set from the default included)."""
    return {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}


def apply_pool_limits(
    instance: dg.DagsterInstance, limits: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Set each pool's limit on the instance; returns the pools whose limit changed.

    `limits` defaults to `factory.pools.pool_limits()` (the repo's values, overridden by
    FACTORY_POOL_LIMITS). This is what the `dagster instance concurrency set` command does, through
    the same storage call; unchanged pools are left alone so a restart does not churn the slots
    that running steps hold.
    """
    wanted = pool_limits() if limits is None else dict(limits)
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        msg = (
            f"the Dagster instance's event log storage ({type(storage).__name__}) has no pool "
            "tables; run `dagster instance migrate` with DAGSTER_HOME set, then start again"
        )
        raise FactoryError(msg)
    present = {p.name: p for p in storage.get_pool_limits()}
    # A pool first set from `default_limit` is re-set explicitly even at the same value: otherwise
    # the daemon resets it to the default whenever `default_limit` changes.
    changed = {
        pool: n
        for pool, n in wanted.items()
        if pool not in present or present[pool].limit != n or present[pool].from_default
    }
    for pool, limit in changed.items():
        storage.set_concurrency_slots(pool, limit)
    return changed


def main() -> None:
    """`python -m factory_assets.pools`: apply the limits to the instance at DAGSTER_HOME.

    On Kubernetes nothing runs `factory run` or `make dev`; deploy/k8s/pool-limits-job.yaml runs
    this after each `helm upgrade` instead.
    """
    try:
        from factory_assets.instance import open_instance  # which imports this module

        with open_instance() as instance:
            changed = apply_pool_limits(instance)
            now = current_pool_limits(instance)
    except FactoryError as exc:
        msg = f"factory pools: {exc}"
        raise SystemExit(msg) from None
    summary = ", ".join(f"{pool}={limit}" for pool, limit in sorted(now.items()))
    sys.stdout.write(f"pool limits: {summary} (changed: {', '.join(sorted(changed)) or 'none'})\n")


if __name__ == "__main__":
    main()
