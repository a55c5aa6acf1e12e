"""Numbers read from environment variables, checked: a bad value is an error naming the variable.

No Dagster import: the CLI, the code location and the alert settings share these readers.
"""

import math
import os
from collections.abc import Mapping

from factory.settings import SettingsError


def _shown(raw: str) -> str:
    from factory.safe_json import printable

    return printable(raw, limit=200)


def env_float(
    name: str,
    default: float,
    *,
    low: float,
    high: float,
    what: str,
    environ: Mapping[str, str] | None = None,
) -> float:
    """`name` as a float in [low, high]; unset or blank gives `default`."""
    raw = (os.environ if environ is None else environ).get(name, "")
    if not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (low <= value <= high):  # NaN fails every comparison
        msg = f"{name}={_shown(raw)} is not {what} in [{low:g}, {high:g}]"
        raise SettingsError(msg)
    return value


def env_int(
    name: str,
    default: int,
    *,
    low: int,
    high: int,
    what: str,
    environ: Mapping[str, str] | None = None,
) -> int:
    """`name` as an integer in [low, high]; unset or blank gives `default`."""
    raw = (os.environ if environ is None else environ).get(name, "")
    if not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        msg = f"{name}={_shown(raw)} is not {what} (an integer in [{low}, {high}])"
        raise SettingsError(msg) from None
    if not (low <= value <= high):
        msg = f"{name}={_shown(raw)} is not {what} in [{low}, {high}]"
        raise SettingsError(msg)
    return value
