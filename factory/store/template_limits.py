"""The limits of one template render, checked as it runs: steps, wall time and value sizes.

Owns the budget of the render in progress (per thread: `MAX_STEPS` loop iterations, calls and
operator evaluations, and `FACTORY_RENDER_TIMEOUT_S` of wall time), and the size checks made
before an operation that could make a huge value runs (or, where the result is linear in its
inputs, right after): repetition, powers, `+`, `%`-formatting, the string methods and filters that
widen text, `range`, and every string, list, mapping and integer a template makes. The sandbox in
`factory.store.sandbox` calls these; a broken limit is a `LimitExceeded`.
"""

import contextlib
import functools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2.sandbox import SecurityError

MAX_VALUE_ITEMS = 8 * 1024 * 1024
MAX_INT_BITS = 65_536
MAX_RANGE = 100_000
MAX_STEPS = 2_000_000

# How often (in steps) the wall clock is read.
_CLOCK_EVERY = 16

# String methods whose result can be much longer than the string: checked before they run.
_REFUSED_METHODS = frozenset({"format", "format_map", "translate", "maketrans"})
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class LimitExceeded(Exception):
    """A render went past one of its limits (the message says which)."""


class Budget:
    """Steps taken and the deadline of the render in progress."""

    __slots__ = ("deadline", "next_clock", "steps", "timeout_s")

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.steps = 0
        self.next_clock = _CLOCK_EVERY


_current = threading.local()


@contextlib.contextmanager
def budget_of(timeout_s: float) -> Iterator[None]:
    """Count this thread's render steps and time against a new budget while the block runs."""
    previous = getattr(_current, "budget", None)
    _current.budget = Budget(timeout_s)
    try:
        yield
    finally:
        _current.budget = previous


def tick(n: int = 1) -> None:
    """Count `n` steps of the render in progress; LimitExceeded past the steps or the time."""
    budget = getattr(_current, "budget", None)
    if budget is None:  # compile-time constant folding: sizes are still checked
        return
    budget.steps += n
    if budget.steps >= budget.next_clock:
        if budget.steps > MAX_STEPS:
            msg = f"the template takes more than {MAX_STEPS} loop iterations and calls"
            raise LimitExceeded(msg)
        budget.next_clock = budget.steps + _CLOCK_EVERY
        if time.monotonic() > budget.deadline:
            msg = (
                f"rendering took more than {budget.timeout_s:g} s "
                "(FACTORY_RENDER_TIMEOUT_S); loops or recursion do too much"
            )
            raise LimitExceeded(msg)


def _too_big(what: str, size: int, limit: int) -> "LimitExceeded":
    return LimitExceeded(f"{what} would be {size} long; at most {limit} is allowed")


def sized(value: Any) -> Any:
    """`value` if it is within the size limits (checked after operations linear in their inputs)."""
    if isinstance(value, str | list | tuple | dict | set | frozenset):
        if len(value) > MAX_VALUE_ITEMS:
            msg = "a value"
            raise _too_big(msg, len(value), MAX_VALUE_ITEMS)
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        msg = f"an integer has more than {MAX_INT_BITS} bits"
        raise LimitExceeded(msg)
    return value


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict) else 0


def check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "**" and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and right > 0 and left.bit_length() * right > MAX_INT_BITS:
            msg = f"a power would have about {left.bit_length() * right} bits"
            raise LimitExceeded(msg + f" (at most {MAX_INT_BITS})")
    elif operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                msg_0 = f"a product would have more than {MAX_INT_BITS} bits"
                raise LimitExceeded(msg_0)
        else:
            seq, count = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(count, int) and _length(seq) * max(count, 0) > MAX_VALUE_ITEMS:
                msg_0 = "a repetition"
                raise _too_big(msg_0, _length(seq) * count, MAX_VALUE_ITEMS)
    elif operator == "+":
        if _length(left) + _length(right) > MAX_VALUE_ITEMS:
            msg_0 = "a concatenation"
            raise _too_big(msg_0, _length(left) + _length(right), MAX_VALUE_ITEMS)
    elif operator == "%" and isinstance(left, str):
        for width, precision in _PERCENT_SPEC.findall(left):
            for number in (width, precision):
                if number == "*" or (number and int(number) > 10_000):
                    msg = "%-formatting with a width or precision over 10000 (or '*')"
                    raise LimitExceeded(msg + " is not allowed")


def refuse_str_method(obj: Any, name: Any) -> None:
    if isinstance(obj, str) and name in _REFUSED_METHODS:
        msg = f"str.{name} is not allowed in a template (it can pad to any width)"
        raise SecurityError(msg)


def check_method(method: Any, args: tuple, kwargs: dict) -> tuple:
    """Refuse string methods that could make a huge string before they run; may return new args
    (an iterable to `str.join` is read into a list once, to be measured)."""
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if not isinstance(owner, str):
        return args
    if name in _REFUSED_METHODS:
        msg = f"str.{name} is not allowed in a template"
        raise SecurityError(msg)
    numbers = [a for a in (*args, *kwargs.values()) if isinstance(a, int)]
    if name in ("center", "ljust", "rjust", "zfill") and numbers:
        if numbers[0] > MAX_VALUE_ITEMS:
            msg_0 = f"str.{name}"
            raise _too_big(msg_0, numbers[0], MAX_VALUE_ITEMS)
    elif name == "expandtabs" and numbers:
        if len(owner) * max(numbers[0], 1) > MAX_VALUE_ITEMS:
            msg_0 = "str.expandtabs"
            raise _too_big(msg_0, len(owner) * numbers[0], MAX_VALUE_ITEMS)
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1])
    elif name == "join" and args:
        items = _bounded_list(args[0])
        total = sum(_length(x) for x in items) + len(owner) * max(len(items) - 1, 0)
        if total > MAX_VALUE_ITEMS:
            msg_0 = "str.join"
            raise _too_big(msg_0, total, MAX_VALUE_ITEMS)
        return (items, *args[1:])
    return args


def _check_replace(value: Any, old: Any, new: Any) -> None:
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
        count = value.count(old) if old else len(value) + 1
        size = len(value) + count * (len(new) - len(old))
        if size > MAX_VALUE_ITEMS:
            msg = "a replace"
            raise _too_big(msg, size, MAX_VALUE_ITEMS)


def _bounded_list(items: Iterable) -> list:
    out = []
    for item in items:
        tick()
        out.append(item)
        if len(out) > MAX_VALUE_ITEMS:
            msg = "a list"
            raise _too_big(msg, len(out), MAX_VALUE_ITEMS)
    return out


def guarded_range(*args: int) -> Iterable[int]:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        msg = f"range() of {len(numbers)} items; at most {MAX_RANGE}"
        raise LimitExceeded(msg)
    return numbers


def iterate(value: Any) -> Iterable:
    """Every `{% for %}` loop iterates through this: each item is a step of the budget."""
    for item in value:
        tick()
        yield item


def wrap_filter(name: str, func: Callable) -> Callable:
    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        tick()
        pos = 1 if getattr(func, "jinja_pass_arg", None) else 0  # environment / context first
        _check_filter_args(name, args[pos:], kwargs)
        if name == "join":
            # Read the iterable once, measure it, and hand the list on.
            items = _bounded_list(args[pos])
            sep = args[pos + 1] if len(args) > pos + 1 else kwargs.get("d", "")
            total = sum(len(str(x)) for x in items) + _length(sep) * max(len(items) - 1, 0)
            if total > MAX_VALUE_ITEMS:
                msg = "a join"
                raise _too_big(msg, total, MAX_VALUE_ITEMS)
            args = (*args[:pos], items, *args[pos + 1 :])
        return sized(func(*args, **kwargs))

    return checked


def _check_filter_args(name: str, args: tuple, kwargs: dict) -> None:
    value = args[0] if args else None
    rest = args[1:]
    if name == "center":
        width = rest[0] if rest else kwargs.get("width", 80)
        if isinstance(width, int) and width > MAX_VALUE_ITEMS:
            msg = "center"
            raise _too_big(msg, width, MAX_VALUE_ITEMS)
    elif name == "indent":
        width = rest[0] if rest else kwargs.get("width", 4)
        pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        lines = value.count("\n") + 1 if isinstance(value, str) else 1
        if _length(value) + lines * max(pad, 0) > MAX_VALUE_ITEMS:
            msg = "indent"
            raise _too_big(msg, _length(value) + lines * pad, MAX_VALUE_ITEMS)
    elif name == "replace" and len(rest) >= 2:
        _check_replace(value, rest[0], rest[1])
    elif name in ("batch", "slice"):
        count = rest[0] if rest else kwargs.get("linecount", kwargs.get("slices", 0))
        if isinstance(count, int) and count > MAX_RANGE:
            raise _too_big(name, count, MAX_RANGE)
