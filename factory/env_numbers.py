"""Numbers read from environment variables, checked: a bad value is an error naming the variable.

No Dagster import: the CLI, the code location and the alert settings share these readers.
"""

import math
import os
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from factory.settings import SettingsError

N = TypeVar("N", int, float)


def _shown(raw: str) -> str:
    from factory.safe_json import printable

    return printable(raw, limit=200)


class _EnvNumber(Generic[N]):
    """A reader of one kind of number (`parse` makes it from text and from the default)."""

    def __init__(self, parse: Callable[..., N], kind: str):
        self.parse = parse
        self.kind = kind

    def __call__(
        self,
        name: str,
        default: N,
        *,
        low: N,
        high: N,
        what: str,
        environ: Mapping[str, str] | None = None,
    ) -> N:
        """`name` as a number of this kind in [low, high]; unset or blank gives `default`."""
        raw = (os.environ if environ is None else environ).get(name, "")
        if not raw.strip():
            return self.parse(default)
        try:
            value = self.parse(raw.strip())
        except ValueError:
            value = math.nan
        if not (low <= value <= high):  # NaN (unparsable or "nan") fails every comparison
            msg = f"{name}={_shown(raw)} is not {what} ({self.kind} in [{low:g}, {high:g}])"
            raise SettingsError(msg)
        return value


env_float = _EnvNumber(float, "a number")
env_int = _EnvNumber(int, "an integer")
