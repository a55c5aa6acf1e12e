"""Numbers read from environment variables, checked: a bad value is an error naming the variable.

No Dagster import: the CLI, the code location and the alert settings share these readers.
"""

import math
import os
from collections.abc import Callable, Mapping

from factory.settings import SettingsError


def _shown(raw: str) -> str:
    from factory.safe_json import printable

    return printable(raw, limit=200)


def _env_number(name, default, parse: Callable, *, low, high, what, kind, environ):
    raw = (os.environ if environ is None else environ).get(name, "")
    if not raw.strip():
        return default
    try:
        value = parse(raw.strip())
    except ValueError:
        value = math.nan
    if not (low <= value <= high):  # NaN (unparsable or "nan") fails every comparison
        msg = f"{name}={_shown(raw)} is not {what} ({kind} in [{low:g}, {high:g}])"
        raise SettingsError(msg)
    return value


def env_float(
    name: str,
    default: float,
    *,
    low: float,
    high: float,
    what: str,
    environ: Mapping[str, str] | None = None,
) -> float:
    """`name` as a number in [low, high]; unset or blank gives `default`."""
    return float(
        _env_number(
            name, default, float, low=low, high=high, what=what, kind="a number", environ=environ
        )
    )


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
    return int(
        _env_number(
            name, default, int, low=low, high=high, what=what, kind="an integer", environ=environ
        )
    )
