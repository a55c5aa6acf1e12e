"""What a store refers to, checked across its sections, even when parts of it are invalid.

Owns the view of every entry the store has (its model, or None where the entry is invalid) and
the cross-reference rules: a manifest's template, base, module versions and test suites exist,
nothing is listed twice, two build secrets do not read one variable, and each platform is one
its base is built for. One mistake does not cascade: references into a section that is not an
object at all are not checked.
"""

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from factory.errors import Problem
from factory.platforms import BY_NAME
from factory.store.manifest import (
    ID_RE,
    SECTION_MODELS,
    VERSION_RE,
    Base,
    Manifest,
    ManifestStore,
    ModuleVersion,
    Template,
    TestSuite,
    secret_env_name,
)
from factory.store.store_messages import location, short


@dataclass
class StoreView:
    """Every entry the store has, by key, with its model or None when the entry is invalid.

    A section is None when it is not an object at all: references into it are not checked (its
    own problem is already reported), so one mistake does not cascade into many.
    """

    bases: dict[str, Base | None] | None = field(default_factory=dict)
    templates: dict[str, Template | None] | None = field(default_factory=dict)
    modules: dict[str, dict[str, ModuleVersion | None] | None] | None = field(default_factory=dict)
    test_suites: dict[str, TestSuite | None] | None = field(default_factory=dict)
    manifests: dict[str, Manifest | None] | None = field(default_factory=dict)

    @classmethod
    def of_model(cls, model: ManifestStore) -> "StoreView":
        return cls(
            modules={name: dict(versions) for name, versions in model.modules.items()},
            **{section: dict(getattr(model, section)) for section in SECTION_MODELS},
        )

    @classmethod
    def of_raw(cls, data: dict) -> "StoreView":
        def entries(section: str, model: type[BaseModel], key_re: re.Pattern = ID_RE) -> Any:
            raw = data.get(section, {})
            if not isinstance(raw, dict):
                return None
            return {key: _valid_or_none(model, key_re, key, value) for key, value in raw.items()}

        modules: dict[str, dict[str, ModuleVersion | None] | None] | None = None
        raw_modules = data.get("modules", {})
        if isinstance(raw_modules, dict):
            modules = {}
            for name, versions in raw_modules.items():
                if not isinstance(versions, dict) or not ID_RE.match(name):
                    modules[name] = None
                    continue
                modules[name] = {
                    v: _valid_or_none(ModuleVersion, VERSION_RE, v, entry)
                    for v, entry in versions.items()
                }
        return cls(
            modules=modules,
            **{section: entries(section, model) for section, model in SECTION_MODELS.items()},
        )


def _valid_or_none(model: type[BaseModel], key_re: re.Pattern, key: str, value: Any) -> Any:
    if not key_re.match(key):
        return None
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _known(names: Any) -> str:
    shown = sorted(names)
    text = ", ".join(shown[:20]) + (f", ... ({len(shown)} in all)" if len(shown) > 20 else "")
    return text or "none"


def cross_reference_problems(file: str, view: StoreView) -> list[Problem]:
    """Every reference of the store that names nothing, or names something twice."""
    problems = []

    def add(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(Problem(file, location(*loc), message))

    for mid, m in (view.manifests or {}).items():
        if m is None:
            continue
        at = ("manifests", mid)
        if view.templates is not None and m.template not in view.templates:
            known = _known(view.templates)
            add((*at, "template"), f"unknown template {short(m.template)} (known: {known})")
        base = None
        if view.bases is not None:
            if m.base not in view.bases:
                known = _known(view.bases)
                add((*at, "base"), f"unknown base {short(m.base)} (known: {known})")
            base = view.bases.get(m.base)
        for name, version in m.fragments.items() if view.modules is not None else ():
            if name not in view.modules:
                known = _known(view.modules)
                add((*at, "fragments", name), f"unknown module {short(name)} (known: {known})")
                continue
            versions = view.modules[name]
            if versions is not None and version not in versions:
                known = _known(versions)
                add(
                    (*at, "fragments", name),
                    f"unknown version {short(version)} of module {short(name)} (known: {known})",
                )
        for i, suite in enumerate(m.tests):
            if view.test_suites is not None and suite not in view.test_suites:
                known = _known(view.test_suites)
                add((*at, "tests", i), f"unknown test suite {short(suite)} (known: {known})")
            if suite in m.tests[:i]:
                add((*at, "tests", i), f"test suite {short(suite)} is listed twice")
        secret_vars: dict[str, str] = {}
        for i, secret in enumerate(m.build_secrets):
            variable = secret_env_name(secret)
            if secret in m.build_secrets[:i]:
                add((*at, "build_secrets", i), f"build secret {short(secret)} is listed twice")
            elif variable in secret_vars:
                add(
                    (*at, "build_secrets", i),
                    f"build secret {short(secret)} and {short(secret_vars[variable])} both "
                    f"read {variable}; give them names that differ in more than '-' and '_'",
                )
            secret_vars.setdefault(variable, secret)
        for i, name in enumerate(m.platforms):
            if name in m.platforms[:i]:
                add((*at, "platforms", i), f"platform {short(name)} is listed twice")
            elif base is not None and BY_NAME[name].oci_platform not in {
                BY_NAME[p].oci_platform for p in base.platforms
            }:
                add(
                    (*at, "platforms", i),
                    f"{name} is not supported by base {short(m.base)} "
                    f"(it has: {', '.join(base.platforms)})",
                )
    for bid, base in (view.bases or {}).items():
        for i, name in enumerate(base.platforms if base is not None else ()):
            if name in base.platforms[:i]:
                add(("bases", bid, "platforms", i), f"platform {short(name)} is listed twice")
    return problems
