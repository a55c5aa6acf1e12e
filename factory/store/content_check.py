"""What a store's files say, checked at load: fragments, templates and every combination rendered.

Owns the content check of a whole store: each fragment parsed against the fragment rules, each
template compiled, each combination rendered with a placeholder base digest (no registry needed)
and its Dockerfile checked, with one problem per template, line and message however many
combinations share it. A template whose renders take too long in all is stopped. Answers are
remembered: per combination by its inputs, per store by its bytes and settings (in memory and,
once passed, on disk through `factory.store.check_cache`), so a sensor's no-op tick renders nothing.
"""

import json
import threading
import time
from typing import Any

from factory.errors import Problem
from factory.settings import dockerfile_syntax_allowlist, render_timeout_s
from factory.store.check_cache import StoreCheckCache
from factory.store.dockerfile import check_fragment
from factory.store.keys import build_key, combination_inputs
from factory.store.load import LoadedStore
from factory.store.render import (
    context_problems,
    describe_rendered,
    dockerfile_context,
    rendered_problems,
)
from factory.store.sandbox import RenderError, check_template_source, render_template
from factory.store.store_messages import location

# A base digest for validation, where the registry is not asked: the checks do not depend on it.
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
# How long all renders of one template may take together in one validation, in render timeouts.
_TEMPLATE_BUDGET_RENDERS = 10
# Results of rendering checks by their inputs: a store that did not change (a sensor's no-op tick)
# is not rendered again.
_CHECKED: dict[tuple, tuple] = {}
_CHECKED_MAX = 200_000
# Checks of several stores may run at once (sensor ticks in threads): the caches are shared.
_LOCK = threading.Lock()


def _remember(key: tuple, result: tuple) -> None:
    with _LOCK:
        if len(_CHECKED) >= _CHECKED_MAX:
            for old in list(_CHECKED)[: _CHECKED_MAX // 10]:
                _CHECKED.pop(old, None)
        _CHECKED[key] = result


def _combination_result(
    store: LoadedStore, manifest_id: str, platform: Any, allowlist: frozenset[str]
) -> tuple:
    """((template line, rendered line, message, is a limit), ...) for one combination."""
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
    disk = StoreCheckCache.for_key(key)
    if disk.passed():
        _STORES_CHECKED[key] = []
        return []
    problems, time_dependent = _content_problems(store)
    if not problems:
        disk.record_pass()
    if not time_dependent:
        with _LOCK:
            if len(_STORES_CHECKED) >= 16:
                _STORES_CHECKED.pop(next(iter(_STORES_CHECKED)))
            _STORES_CHECKED[key] = list(problems)
    return problems


def _content_problems(store: LoadedStore) -> tuple[list, bool]:
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
    """A file path as JSON quotes it, so any character in it stays visible in a message."""
    return json.dumps(text)
