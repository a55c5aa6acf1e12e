"""Templates compiled and rendered in Factory's sandbox, within the limits, deterministically.

Owns the template language a store may use: an immutable Jinja2 sandbox (a template cannot reach
Python internals or change values) with StrictUndefined (a typo is an error, not a blank), only
the filters and globals in `ALLOWED_FILTERS` / `ALLOWED_GLOBALS` (nothing random, nothing that
formats with a width), no `str.format`, no `include`, `import` or `extends` (a template is one
file), blocks nested at most `MAX_NESTING` deep; compiled templates are kept by source text. Every
failure is a `RenderError` naming the template's line where one is known. The limits each render
runs within are `factory.store.template_limits`.
"""

import threading
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.filters import FILTERS
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from factory.errors import FactoryError
from factory.settings import render_timeout_s
from factory.store.template_limits import (
    LimitExceeded,
    budget_of,
    check_binop,
    check_method,
    guarded_range,
    iterate,
    refuse_str_method,
    sized,
    tick,
    wrap_filter,
)

MAX_RENDER_CHARS = 8 * 1024 * 1024

# `{% for %}`, `{% if %}`, `{% macro %}`... inside each other (Python compiles at most 20 blocks).
MAX_NESTING = 10

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


class RenderError(FactoryError):
    """A template could not be rendered: `reason` says why, `line` (if known) where."""

    def __init__(self, reason: str, line: int | None = None, *, limit: bool = False):
        self.reason = reason
        self.line = line
        self.limit = limit  # a time/size/step limit (not worth trying other combinations)
        super().__init__(f"line {line}: {reason}" if line else reason)


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
        tick()
        check_binop(operator, left, right)
        return sized(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        tick()
        args = check_method(__obj, args, kwargs)
        return sized(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        refuse_str_method(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        refuse_str_method(obj, argument)
        return super().getitem(obj, argument)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Limits().visit(super()._parse(source, name, filename))


def _dockerquote(value: Any) -> str:
    """Dockerfile LABEL values are JSON-quoted so spaces and quotes survive."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _environment() -> _Sandbox:
    env = _Sandbox(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters = {name: wrap_filter(name, FILTERS[name]) for name in ALLOWED_FILTERS}
    env.filters["dockerquote"] = wrap_filter("dockerquote", _dockerquote)
    env.filters["_factory_iterate"] = iterate
    env.filters["_factory_sized"] = sized
    env.globals = {name: env.globals[name] for name in ALLOWED_GLOBALS}
    env.globals["range"] = guarded_range
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
    chunks: list[str] = []
    size = 0
    generator = template.root_render_func(template.new_context(context))
    try:
        with budget_of(render_timeout_s() if timeout_s is None else timeout_s):
            for chunk in generator:
                size += len(chunk)
                if size > MAX_RENDER_CHARS:
                    msg = f"the rendered Dockerfile is over {MAX_RENDER_CHARS} characters"
                    raise LimitExceeded(msg)
                tick()
                chunks.append(chunk)
    except LimitExceeded as exc:
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
    return "".join(chunks)
