"""Sensor cursors and batching, without Dagster: small JSON cursors and capped run-request slices.

A tick may find more work than one tick should request (resolving each partitioned run request
costs the daemon a query; tens of thousands in one tick approach the sensor timeout). The rest goes
out on later ticks: the cursor remembers which list it was working through (a fingerprint of what
the list was computed from) and how far it got, never the list itself, so it stays small.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_RUN_REQUESTS = 500
DEFAULT_SENSOR_INTERVAL_S = 60


def _positive_int_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"{name}={raw!r} must be a positive integer"
        raise ValueError(msg)
    return value


def max_run_requests() -> int:
    """Run requests one sensor tick may emit (FACTORY_MAX_RUN_REQUESTS_PER_TICK, default 500)."""
    return _positive_int_from_env("FACTORY_MAX_RUN_REQUESTS_PER_TICK", DEFAULT_MAX_RUN_REQUESTS)


def sensor_interval_s() -> int:
    """Seconds between sensor ticks (FACTORY_SENSOR_INTERVAL_S, default 60)."""
    return _positive_int_from_env("FACTORY_SENSOR_INTERVAL_S", DEFAULT_SENSOR_INTERVAL_S)


def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclass
class Cursor:
    """What a sensor remembers between ticks.

    `seen`: the fingerprint of the last state fully handled (store digest, or base digests).
    `batch`/`offset`: the state whose run list is being sent out in slices, and how far it got.
    `digests`: per (base, platform) digests (base-digest sensor only).
    """

    seen: str | None = None
    batch: str | None = None
    offset: int = 0
    digests: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> "Cursor":
        """A cursor from its JSON; an unreadable cursor starts afresh rather than failing ticks."""
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls(
                seen=data.get("seen"),
                batch=data.get("batch"),
                offset=int(data.get("offset", 0)),
                digests={str(k): str(v) for k, v in (data.get("digests") or {}).items()},
            )
        except (ValueError, TypeError, AttributeError):
            return cls()

    def dump(self) -> str:
        data: dict[str, Any] = {"seen": self.seen}
        if self.batch:
            data.update(batch=self.batch, offset=self.offset)
        if self.digests:
            data["digests"] = self.digests
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


def next_slice(items: list, state: str, cursor: Cursor, cap: int) -> tuple[list, Cursor]:
    """The next at most `cap` items of the run list computed from `state`, and the new cursor.

    When the list is done the cursor's `seen` becomes `state`; until then it keeps the old one, so
    an interrupted tick resumes the same list.
    """
    start = cursor.offset if cursor.batch == state else 0
    chunk = items[start : start + cap]
    end = start + len(chunk)
    if end < len(items):
        return chunk, Cursor(seen=cursor.seen, batch=state, offset=end, digests=cursor.digests)
    return chunk, Cursor(seen=state, digests=cursor.digests)
