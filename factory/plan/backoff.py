"""When a failed combination is tried again: exponential backoff on a result that did not pass.

A `fail` or `error` record for a combination's current keys is a result, not something to redo on
every run. As the Docker Official Images builder does, the next attempt waits `first` after the
failure (default 1 h), doubling with every further failed attempt of the same record key, up to
`cap` (default 32 h). `factory run --retry-failed` and `--force` try at once.
"""

import os
from dataclasses import dataclass
from datetime import datetime, timedelta

from factory.settings import SettingsError

FIRST_ENV = "FACTORY_FAILED_BACKOFF_S"
CAP_ENV = "FACTORY_FAILED_BACKOFF_MAX_S"
DEFAULT_FIRST_S = 3600
DEFAULT_CAP_S = 32 * 3600
# Ten years: a larger delay is a typo, not a policy.
MAX_SETTING_S = 10 * 365 * 24 * 3600


def _seconds_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SETTING_S:
        msg = f"{name}={raw[:40]!r} must be a whole number of seconds from 0 to {MAX_SETTING_S}"
        raise SettingsError(msg)
    return value


@dataclass(frozen=True)
class Backoff:
    first_s: int = DEFAULT_FIRST_S
    cap_s: int = DEFAULT_CAP_S

    @classmethod
    def from_env(cls) -> "Backoff":
        first = _seconds_from_env(FIRST_ENV, DEFAULT_FIRST_S)
        cap = _seconds_from_env(CAP_ENV, DEFAULT_CAP_S)
        if cap < first:
            msg = (
                f"{CAP_ENV}={cap} is below {FIRST_ENV}={first}: "
                "the cap must be at least the first delay"
            )
            raise SettingsError(msg)
        return cls(first_s=first, cap_s=cap)

    def delay(self, failures: int) -> timedelta:
        """The wait after the `failures`-th failed attempt (1 = the first failure)."""
        exponent = max(0, failures - 1)
        # 2**exponent overflows nothing here: past the cap the doubling stops mattering.
        seconds = self.first_s * (2 ** min(exponent, 40))
        return timedelta(seconds=min(seconds, self.cap_s))

    def retry_at(self, failed_at: datetime, failures: int) -> datetime:
        return failed_at + self.delay(failures)
