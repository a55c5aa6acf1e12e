"""Per-pool limits: how many build steps of each pool may run at once, defined once here.

The pools are the platform table's (`amd64`, `arm64`, `gpu`). The limits live in the Dagster
instance's database, not in `dagster.yaml`, so the project's start-up writes these values there
(`factory_assets.pools.apply_pool_limits`); this module stays free of Dagster so the CLI and the
tests can read and check the limits without an instance.

The local defaults fit one small machine (2 cores, one Docker Engine):

- `amd64=2`: native builds; two at once keep both cores busy while one of them waits on the
  registry or on a push, and a third would only queue behind the others inside the engine.
- `arm64=1`: builds and tests run under qemu-user-static emulation, several times slower and
  CPU-bound; one at a time leaves the amd64 pool its cores instead of starving it.
- `gpu=1`: a GPU step asks for a whole device (`nvidia.com/gpu: 1`) and a machine has at most one
  here; without an NVIDIA runtime these steps report "no executor" at once, so the slot is short.

On Kubernetes the node pools are larger: set `FACTORY_POOL_LIMITS=amd64=8,arm64=4,gpu=2` (for
example) to match them. Pools not named there keep their default.
"""

import os
import re
from collections.abc import Mapping
from types import MappingProxyType

from factory.errors import FactoryError
from factory.platforms import PLATFORMS

ENV_VAR = "FACTORY_POOL_LIMITS"

# Dagster refuses more slots per pool than this (DAGSTER_MAX_GLOBAL_OP_CONCURRENCY_LIMIT, default
# 1000); checking here gives the error at parse time, naming the variable, not deep in storage.
MAX_LIMIT = 1000

# int() alone would also take "4_0" and " +4"; a limit is plain decimal digits.
_INTEGER = re.compile(r"-?[0-9]+")

POOLS: tuple[str, ...] = tuple(dict.fromkeys(p.pool for p in PLATFORMS))

POOL_LIMITS: Mapping[str, int] = MappingProxyType({"amd64": 2, "arm64": 1, "gpu": 1})


class PoolLimitsError(FactoryError):
    """A pool limit override cannot be used (bad syntax, unknown pool, value out of range)."""


def parse_pool_limits(text: str, *, source: str = ENV_VAR) -> dict[str, int]:
    """Parse `pool=n[,pool=n...]` into a mapping; `source` names where the text came from.

    Unknown pools are errors rather than ignored: a typo (`amd46=4`) would otherwise leave the
    real pool at its default without a word. A limit of 0 is allowed and pauses the pool.
    """
    limits: dict[str, int] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            if text.strip():
                msg = f"{source}={text!r}: empty item; write pool=n items separated by commas"
                raise PoolLimitsError(msg)
            continue
        pool, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not pool or not value:
            msg = f"{source}: {item!r} is not pool=n (for example amd64=4)"
            raise PoolLimitsError(msg)
        if pool not in POOLS:
            msg = f"{source}: unknown pool {pool!r} (pools: {', '.join(POOLS)})"
            raise PoolLimitsError(msg)
        if pool in limits:
            msg = f"{source}: pool {pool!r} is given twice"
            raise PoolLimitsError(msg)
        if not _INTEGER.fullmatch(value):
            msg = f"{source}: limit of {pool!r} must be a whole number, not {value!r}"
            raise PoolLimitsError(msg)
        limit = int(value)
        if not 0 <= limit <= MAX_LIMIT:
            msg = f"{source}: limit of {pool!r} must be between 0 and {MAX_LIMIT}, not {limit}"
            raise PoolLimitsError(msg)
        limits[pool] = limit
    return limits


def pool_limits(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """The limit of every pool: the defaults above, overridden by `FACTORY_POOL_LIMITS`."""
    env = os.environ if environ is None else environ
    return {**POOL_LIMITS, **parse_pool_limits(env.get(ENV_VAR, ""))}
