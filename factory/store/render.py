"""Rendering a combination's Dockerfile from its template and fragments, deterministically and
within limits.

The template gets `base` (the pinned `image@sha256:...` for this platform), `fragments` (name ->
snippet, in the manifest's order), `manifest_id`, `platform` and `labels`. The sandbox keeps a
template from reaching Python internals and from changing values (an immutable sandbox);
StrictUndefined turns a typo into an error, not a blank.

Limits (a template is input that many people edit, so it is bounded like any other input):

- time: `FACTORY_RENDER_TIMEOUT_S` (default 2 s) of wall time, and at most `MAX_STEPS` loop
  iterations, calls and operator evaluations per render, checked inside the render as it runs;
- size: the rendered text at most `MAX_RENDER_CHARS`; every string, list or mapping a template
  makes at most `MAX_VALUE_ITEMS` long; integers at most `MAX_INT_BITS` bits; `range` at most
  `MAX_RANGE` items. Repetition (`*`), powers (`**`), `+`, `%`-formatting, `~` and the filters and
  methods that widen text (`center`, `indent`, `replace`, `join`, `ljust`, ...) are checked
  before (or, where the result is linear in its inputs, right after) they run;
- language: no `include`, `import` or `extends` (a template is one file), only the filters and
  globals listed in `ALLOWED_FILTERS` / `ALLOWED_GLOBALS` (nothing random, nothing that formats
  with a width), no `str.format`.

Every failure is a `RenderError` naming the template's line where one is known; the callers turn
it into a StageError (stage `render`) or a store problem, both naming the template's file.
After rendering, the text is checked by `factory.store.dockerfile.check_dockerfile`: every stage
starts
from the pinned base, no parser directive except an allowlisted `# syntax=`.
"""

import functools
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.filters import FILTERS
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer

from factory.errors import FactoryError, StageError
from factory.settings import dockerfile_syntax_allowlist, render_timeout_s
from factory.store.dockerfile import check_dockerfile
from factory.store.keys import CombinationInputs
from factory.store.load import LoadedStore

LABEL_PREFIX = "io.factory"

MAX_RENDER_CHARS = 8 * 1024 * 1024
MAX_VALUE_ITEMS = 8 * 1024 * 1024
MAX_INT_BITS = 65_536
MAX_RANGE = 100_000
MAX_STEPS = 2_000_000
# `{% for %}`, `{% if %}`, `{% macro %}`... inside each other (Python compiles at most 20 blocks).
MAX_NESTING = 10
# How often (in steps) the wall clock is read.
_CLOCK_EVERY = 16

ALLOWED_FILTERS = (
    "abs",
    "batch",
    "capitalize",
    "center",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "forceescape",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "string",
    "striptags",
    "sum",
    "title",
    "tojson",
    "trim",
    "truncate",
    "unique",
    "upper",
    "urlencode",
    "wordcount",
)
ALLOWED_GLOBALS = ("range", "dict", "namespace", "cycler", "joiner")
# String methods whose result can be much longer than the string: checked before they run.
_REFUSED_METHODS = frozenset({"format", "format_map", "translate", "maketrans"})
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


@dataclass(frozen=True)
class RenderedDockerfile:
    text: str
    labels: dict[str, str]


class RenderError(FactoryError):
    """A template could not be rendered: `reason` says why, `line` (if known) where."""

    def __init__(self, reason: str, line: int | None = None, *, limit: bool = False):
        self.reason = reason
        self.line = line
        self.limit = limit  # a time/size/step limit (not worth trying other combinations)
        super().__init__(f"line {line}: {reason}" if line else reason)


class _LimitExceeded(Exception):
    pass


# --- the budget of the render in progress (per thread) ------------------------------------------


class _Budget:
    __slots__ = ("deadline", "next_clock", "steps", "timeout_s")

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.steps = 0
        self.next_clock = _CLOCK_EVERY


_current = threading.local()


def _tick(n: int = 1) -> None:
    budget = getattr(_current, "budget", None)
    if budget is None:  # compile-time constant folding: sizes are still checked
        return
    budget.steps += n
    if budget.steps >= budget.next_clock:
        if budget.steps > MAX_STEPS:
            msg = f"the template takes more than {MAX_STEPS} loop iterations and calls"
            raise _LimitExceeded(msg)
        budget.next_clock = budget.steps + _CLOCK_EVERY
        if time.monotonic() > budget.deadline:
            msg = (
                f"rendering took more than {budget.timeout_s:g} s "
                "(FACTORY_RENDER_TIMEOUT_S); loops or recursion do too much"
            )
            raise _LimitExceeded(msg)


def _too_big(what: str, size: int, limit: int) -> "_LimitExceeded":
    return _LimitExceeded(f"{what} would be {size} long; at most {limit} is allowed")


def _sized(value: Any) -> Any:
    """`value` if it is within the size limits (checked after operations linear in their inputs)."""
    if isinstance(value, str | list | tuple | dict | set | frozenset):
        if len(value) > MAX_VALUE_ITEMS:
            msg = "a value"
            raise _too_big(msg, len(value), MAX_VALUE_ITEMS)
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        msg = f"an integer has more than {MAX_INT_BITS} bits"
        raise _LimitExceeded(msg)
    return value


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict) else 0


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "**" and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and right > 0 and left.bit_length() * right > MAX_INT_BITS:
            msg = f"a power would have about {left.bit_length() * right} bits"
            raise _LimitExceeded(msg + f" (at most {MAX_INT_BITS})")
    elif operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                msg_0 = f"a product would have more than {MAX_INT_BITS} bits"
                raise _LimitExceeded(msg_0)
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
                    raise _LimitExceeded(msg + " is not allowed")


def _refuse_str_method(obj: Any, name: Any) -> None:
    if isinstance(obj, str) and name in _REFUSED_METHODS:
        msg = f"str.{name} is not allowed in a template (it can pad to any width)"
        raise SecurityError(msg)


def _check_method(method: Any, args: tuple, kwargs: dict) -> tuple:
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
        _tick()
        out.append(item)
        if len(out) > MAX_VALUE_ITEMS:
            msg = "a list"
            raise _too_big(msg, len(out), MAX_VALUE_ITEMS)
    return out


def _guarded_range(*args: int) -> Iterable[int]:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        msg = f"range() of {len(numbers)} items; at most {MAX_RANGE}"
        raise _LimitExceeded(msg)
    return numbers


def _iterate(value: Any) -> Iterable:
    """Every `{% for %}` loop iterates through this: each item is a step of the budget."""
    for item in value:
        _tick()
        yield item


def _wrap_filter(name: str, func: Callable) -> Callable:
    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        _tick()
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
        return _sized(func(*args, **kwargs))

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


_BLOCKS = (
    nodes.For,
    nodes.If,
    nodes.Macro,
    nodes.CallBlock,
    nodes.FilterBlock,
    nodes.With,
    nodes.Block,
    nodes.Scope,
    nodes.ScopedEvalContextModifier,
)


class _Limits(NodeTransformer):
    """Rewrites a parsed template: loops iterate through the budget, `~` results are measured,
    and include/import/extends are refused (there is no loader: a template is one file)."""

    def __init__(self) -> None:
        self.depth = 0

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        block = isinstance(node, _BLOCKS)
        if block:
            self.depth += 1
            if self.depth > MAX_NESTING:
                msg = f"blocks are nested more than {MAX_NESTING} deep; flatten the template"
                raise TemplateSyntaxError(msg, node.lineno)
        try:
            return super().visit(node, *args, **kwargs)
        finally:
            if block:
                self.depth -= 1

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_factory_iterate", [], [], None, None)
        node.iter.set_lineno(node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        wrapped = nodes.Filter(node, "_factory_sized", [], [], None, None)
        wrapped.set_lineno(node.lineno)
        return wrapped

    def _refuse(self, node: nodes.Node) -> nodes.Node:
        word = {"Extends": "extends", "Include": "include"}.get(type(node).__name__, "import")
        msg = (
            f"{{% {word} %}} is not supported: a template is one file (no loader); "
            "put the text in the template or in a fragment"
        )
        raise TemplateSyntaxError(msg, node.lineno)

    visit_Extends = visit_Include = visit_Import = visit_FromImport = _refuse


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%", "/", "//"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        _check_binop(operator, left, right)
        return _sized(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        args = _check_method(__obj, args, kwargs)
        return _sized(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        _refuse_str_method(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        _refuse_str_method(obj, argument)
        return super().getitem(obj, argument)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Limits().visit(super()._parse(source, name, filename))


def _dockerquote(value: Any) -> str:
    """Dockerfile LABEL values are JSON-quoted so spaces and quotes survive."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _environment() -> _Sandbox:
    env = _Sandbox(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters = {name: _wrap_filter(name, FILTERS[name]) for name in ALLOWED_FILTERS}
    env.filters["dockerquote"] = _wrap_filter("dockerquote", _dockerquote)
    env.filters["_factory_iterate"] = _iterate
    env.filters["_factory_sized"] = _sized
    env.globals = {name: env.globals[name] for name in ALLOWED_GLOBALS}
    env.globals["range"] = _guarded_range
    return env


_ENV_LOCK = threading.Lock()
_ENV: _Sandbox | None = None
# Compiled templates (or their compile error) by source text: compiling is most of a render's
# cost, and planning renders every combination.
_COMPILED: dict[str, Any] = {}
_COMPILED_MAX = 64


def _env() -> _Sandbox:
    global _ENV
    with _ENV_LOCK:
        if _ENV is None:
            _ENV = _environment()
        return _ENV


def _compile(source: str) -> Any:
    cached = _COMPILED.get(source)
    if cached is not None:
        if isinstance(cached, RenderError):
            raise cached
        return cached
    try:
        compiled: Any = _env().from_string(source)
    except TemplateSyntaxError as exc:
        compiled = RenderError(f"template syntax error: {exc.message}", exc.lineno)
    except RecursionError:
        compiled = RenderError("the template is nested too deeply to compile")
    except SyntaxError as exc:  # Python's own limits (e.g. too many nested blocks)
        compiled = RenderError(f"the template is nested too deeply to compile ({exc.msg})")
    except MemoryError:
        compiled = RenderError("the template is too large to compile")
    with _ENV_LOCK:
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[source] = compiled
    if isinstance(compiled, RenderError):
        raise compiled
    return compiled


def check_template_source(source: str) -> None:
    """Raise RenderError when a template does not compile (syntax, include/import, nesting)."""
    _compile(source)


def _template_line(template: Any, tb: Any) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return line


def _paused_line(template: Any, generator: Any) -> int | None:
    """The template line a paused render generator stands at (the innermost one)."""
    line = None
    while generator is not None:
        frame = getattr(generator, "gi_frame", None)
        if frame is not None and frame.f_code.co_filename == "<template>":
            line = template.get_corresponding_lineno(frame.f_lineno)
        generator = getattr(generator, "gi_yieldfrom", None)
    return line


def render_template(source: str, context: dict[str, Any], *, timeout_s: float | None = None) -> str:
    """Render `source` with `context` within the limits; raise RenderError on any failure."""
    template = _compile(source)
    budget = _Budget(render_timeout_s() if timeout_s is None else timeout_s)
    previous = getattr(_current, "budget", None)
    _current.budget = budget
    chunks: list[str] = []
    size = 0
    generator = template.root_render_func(template.new_context(context))
    try:
        for chunk in generator:
            size += len(chunk)
            if size > MAX_RENDER_CHARS:
                msg = f"the rendered Dockerfile is over {MAX_RENDER_CHARS} characters"
                raise _LimitExceeded(msg)
            _tick()
            chunks.append(chunk)
    except _LimitExceeded as exc:
        # Raised between two pieces of output: the template line is where the render paused.
        line = _template_line(template, exc.__traceback__) or _paused_line(template, generator)
        raise RenderError(str(exc), line, limit=True) from None
    except RecursionError as exc:
        line = _template_line(template, exc.__traceback__)
        msg_0 = "recursion too deep (a macro or loop calls itself)"
        raise RenderError(msg_0, line) from None
    except MemoryError as exc:
        line = _template_line(template, exc.__traceback__)
        msg_0 = "out of memory while rendering"
        raise RenderError(msg_0, line, limit=True) from None
    except ZeroDivisionError as exc:
        msg_0 = "division by zero"
        raise RenderError(msg_0, _template_line(template, exc.__traceback__)) from None
    except Exception as exc:  # any other failure of template code is the template's
        line = _template_line(template, exc.__traceback__)
        detail = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise RenderError(f"{type(exc).__name__}: {detail}".rstrip(": "), line) from None
    finally:
        _current.budget = previous
    return "".join(chunks)


# --- the Dockerfile of one combination ---------------------------------------------------------


def oci_labels(inputs: CombinationInputs, build_key: str) -> dict[str, str]:
    """The labels Factory sets on every image: where it came from and from what."""
    fragments = ",".join(f"{f['name']}@{f['version']}" for f in inputs.fragments)
    return {
        "org.opencontainers.image.title": inputs.manifest_id,
        "org.opencontainers.image.base.name": inputs.base["ref"],
        "org.opencontainers.image.base.digest": inputs.base["digest"],
        f"{LABEL_PREFIX}.manifest-id": inputs.manifest_id,
        f"{LABEL_PREFIX}.platform": inputs.platform,
        f"{LABEL_PREFIX}.build-key": build_key,
        f"{LABEL_PREFIX}.template": f"{inputs.template['name']}@{inputs.template['version']}",
        f"{LABEL_PREFIX}.fragments": fragments,
    }


_PINNED = re.compile(r"\A[A-Za-z0-9._:/-]+@sha256:[0-9a-f]{64}\Z")
_ONE_LINE = re.compile(r"\A[^\x00-\x1f\x7f-\x9f\u2028\u2029]*\Z")


def context_problems(context: dict[str, Any]) -> list[str]:
    """Every value Factory interpolates (all but the fragments) must be one printable line."""
    problems = []
    if not _PINNED.match(context["base"]):
        problems.append(f"base {context['base'][:100]!r} is not a pinned image@sha256:<64 hex>")
    for name in ("manifest_id", "platform"):
        if not _ONE_LINE.match(context[name]):
            problems.append(
                f"{name} {context[name][:100]!r} contains a newline or control character"
            )
    for key, value in context["labels"].items():
        if not (_ONE_LINE.match(key) and _ONE_LINE.match(value)):
            problems.append(f"label {key[:100]!r} contains a newline or control character")
    return problems


def dockerfile_context(
    store: LoadedStore, inputs: CombinationInputs, build_key: str
) -> dict[str, Any]:
    manifest = store.manifest(inputs.manifest_id)
    return {
        "base": inputs.base["pinned"],
        "fragments": {
            name: store.module_file(name, version).text.rstrip("\n") + "\n"
            for name, version in manifest.fragments.items()
        },
        "manifest_id": inputs.manifest_id,
        "platform": inputs.platform,
        "labels": oci_labels(inputs, build_key),
    }


def template_line_of(source: str, rendered_line: str) -> int | None:
    """The template line that reads exactly like a rendered line (when there is one), so a
    message can point into the template and not only into the rendered text."""
    wanted = rendered_line.strip()
    if not wanted:
        return None
    for number, line in enumerate(source.split("\n"), start=1):
        if line.strip() == wanted:
            return number
    return None


def rendered_problems(
    source: str, text: str, base: str, allowlist: frozenset[str] | None = None
) -> list[tuple[int | None, int, str]]:
    """(template line or None, rendered line, message) for each rule the rendered text breaks."""
    if allowlist is None:
        allowlist = dockerfile_syntax_allowlist()
    lines = text.split("\n")
    out = []
    for line, message in check_dockerfile(text, base, allowlist):
        original = lines[line - 1] if 0 < line <= len(lines) else ""
        out.append((template_line_of(source, original), line, message))
    return out


def describe_rendered(template_line: int | None, rendered_line: int) -> str:
    if template_line:
        return f"line {template_line} (rendered line {rendered_line})"
    return f"rendered line {rendered_line}"


def render_dockerfile(
    store: LoadedStore, inputs: CombinationInputs, build_key: str
) -> RenderedDockerfile:
    """Render one combination; raise StageError(stage="render") naming the template on failure."""
    manifest = store.manifest(inputs.manifest_id)
    template_file = store.template_file(manifest.template)
    context = dockerfile_context(store, inputs, build_key)
    what = (
        f"rendering {inputs.manifest_id} for {inputs.platform} failed in template "
        f"{manifest.template!r} ({template_file.rel_path}"
    )
    bad_values = context_problems(context)
    if bad_values:
        msg = f"{what}): {'; '.join(bad_values)}"
        raise StageError(msg, stage="render")
    try:
        text = render_template(template_file.text, context)
    except RenderError as exc:
        where = f"line {exc.line}" if exc.line else "template"
        msg = f"{what}, {where}): {exc.reason}"
        raise StageError(msg, stage="render") from None
    problems = rendered_problems(template_file.text, text, context["base"])
    if problems:
        details = "; ".join(
            f"{describe_rendered(t, r)}: {message}" for t, r, message in problems[:10]
        )
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        msg = (
            f"the Dockerfile of {inputs.manifest_id} for {inputs.platform} rendered from "
            f"template {manifest.template!r} ({template_file.rel_path}) is refused: "
            f"{details}{more}"
        )
        raise StageError(
            msg,
            stage="render",
        )
    return RenderedDockerfile(text=text, labels=context["labels"])


# --- validation of a whole store: fragments, templates, every combination rendered ------------

# A base digest for validation, where the registry is not asked: the checks do not depend on it.
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
# How long all renders of one template may take together in one validation, in render timeouts.
_TEMPLATE_BUDGET_RENDERS = 10
# Results of rendering checks by their inputs: a store that did not change (a sensor's no-op tick)
# is not rendered again.
_CHECKED: dict[tuple, tuple] = {}
_CHECKED_MAX = 200_000


def _remember(key: tuple, result: tuple) -> None:
    with _ENV_LOCK:
        if len(_CHECKED) >= _CHECKED_MAX:
            for old in list(_CHECKED)[: _CHECKED_MAX // 10]:
                _CHECKED.pop(old, None)
        _CHECKED[key] = result


def _combination_result(
    store: LoadedStore, manifest_id: str, platform: Any, allowlist: frozenset[str]
) -> tuple:
    """((template line, rendered line, message, is a limit), ...) for one combination."""
    from factory.store.keys import build_key, combination_inputs

    inputs = combination_inputs(store, manifest_id, platform, PLACEHOLDER_DIGEST)
    bkey = build_key(inputs)
    key = (bkey, inputs.base["ref"], inputs.base["pinned"], allowlist)
    cached = _CHECKED.get(key)
    if cached is not None:
        return cached
    template_text = store.template_file(store.manifest(manifest_id).template).text
    context = dockerfile_context(store, inputs, bkey)
    bad_values = context_problems(context)
    if bad_values:
        result: tuple = tuple((None, 0, message, False) for message in bad_values)
    else:
        try:
            text = render_template(template_text, context)
        except RenderError as exc:
            result = ((exc.line, 0, exc.reason, exc.limit),)
            if exc.limit:
                return result  # time-dependent: not remembered
        else:
            problems = rendered_problems(template_text, text, context["base"], allowlist)
            # One message for every base: the pinned reference differs per base and platform.
            base = context["base"]
            result = tuple((t, r, m.replace(base, "{{ base }}"), False) for t, r, m in problems)
    _remember(key, result)
    return result


_STORES_CHECKED: dict[tuple, list] = {}


def content_problems(store: LoadedStore) -> list:
    """Problems in what the store's files say: each fragment parsed, each template compiled,
    each combination rendered (placeholder base digest) and its Dockerfile checked.

    The answer for an unchanged store (same bytes everywhere, same settings) is remembered.
    """
    key = (str(store.path), store.sha256, dockerfile_syntax_allowlist(), render_timeout_s())
    known = _STORES_CHECKED.get(key)
    if known is not None:
        return list(known)
    from factory.store.check_cache import StoreCheckCache

    disk = StoreCheckCache.for_key(key)
    if disk.passed():
        _STORES_CHECKED[key] = []
        return []
    problems, time_dependent = _content_problems(store)
    if not problems:
        disk.record_pass()
    if not time_dependent:
        with _ENV_LOCK:
            if len(_STORES_CHECKED) >= 16:
                _STORES_CHECKED.pop(next(iter(_STORES_CHECKED)))
            _STORES_CHECKED[key] = list(problems)
    return problems


def _content_problems(store: LoadedStore) -> tuple[list, bool]:
    from factory.errors import Problem
    from factory.store.dockerfile import check_fragment
    from factory.store.load import location

    file = str(store.path)
    problems: list[Problem] = []
    bad_fragments: set[tuple[str, str]] = set()
    for name, versions in store.model.modules.items():
        for version, module in versions.items():
            for line, message in check_fragment(store.files[module.path].text)[:20]:
                bad_fragments.add((name, version))
                problems.append(
                    Problem(
                        file,
                        location("modules", name, version, "path"),
                        f"{json_quote(module.path)} line {line}: {message}",
                    )
                )
    bad_templates: set[str] = set()
    for name, template in store.model.templates.items():
        try:
            check_template_source(store.files[template.path].text)
        except RenderError as exc:
            bad_templates.add(name)
            where = f" line {exc.line}" if exc.line else ""
            problems.append(
                Problem(
                    file,
                    location("templates", name, "path"),
                    f"{json_quote(template.path)}{where}: {exc.reason}",
                )
            )

    allowlist = dockerfile_syntax_allowlist()
    timeout = render_timeout_s()
    # (template, template line, message) -> [first combination, rendered line, count]
    grouped: dict[tuple, list] = {}
    spent: dict[str, float] = {}
    stopped: dict[str, int] = {}
    for manifest_id, platform in store.combinations():
        manifest = store.manifest(manifest_id)
        name = manifest.template
        if name in bad_templates or any(
            (n, v) in bad_fragments for n, v in manifest.fragments.items()
        ):
            continue
        if name in stopped:
            stopped[name] += 1
            continue
        started = time.monotonic()
        result = _combination_result(store, manifest_id, platform, allowlist)
        spent[name] = spent.get(name, 0.0) + time.monotonic() - started
        for template_line, rendered_line, message, limit in result:
            entry = grouped.setdefault(
                (name, template_line, message), [(manifest_id, platform.name), rendered_line, 0]
            )
            entry[2] += 1
            if limit:
                stopped[name] = 0
        if name not in stopped and spent[name] > timeout * _TEMPLATE_BUDGET_RENDERS:
            stopped[name] = 0
            grouped[(name, None, "rendering its combinations takes too long in all")] = [
                (manifest_id, platform.name),
                0,
                1,
            ]
    for (name, template_line, message), (example, rendered_line, count) in grouped.items():
        rel = store.model.templates[name].path
        if template_line or rendered_line:
            where = " " + (
                describe_rendered(template_line, rendered_line)
                if rendered_line
                else f"line {template_line}"
            )
        else:
            where = ""
        also = f" and {count - 1} other combination{'s' if count > 2 else ''}" if count > 1 else ""
        skipped = stopped.get(name, 0)
        if skipped and message and rendered_line == 0:
            also += f"; {skipped} more not rendered after this"
        problems.append(
            Problem(
                file,
                location("templates", name, "path"),
                f"{json_quote(rel)}{where} (rendering {example[0]} for {example[1]}{also}): "
                f"{message}",
            )
        )
    return problems, bool(stopped)


def json_quote(text: str) -> str:
    import json

    return json.dumps(text)
