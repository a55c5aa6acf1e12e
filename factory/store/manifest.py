"""The manifest store's schema (schema_version 1) as pydantic models.

Unknown fields are errors everywhere (`extra="forbid"`), values are strict (no "1" for 1, no true
for 1), and ids and versions are checked against the patterns DESIGN.md fixes. Cross-references (a
manifest naming an unknown module version, say) and the files the store names are checked in
`factory.store.references` and `factory.store.named_files`, which know the whole store. Build
secrets' values come from the environment variables `secret_env_name` names.

The patterns are written for pydantic's Rust regex engine, where `$` only matches at the very end
(no trailing newline slips through). Use `ID_RE` / `VERSION_RE` (anchored with `\\Z`) from Python.
"""

import re
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from factory.platforms import PLATFORM_NAMES

SCHEMA_VERSION = 1
SECRET_ENV_PREFIX = "FACTORY_SECRET_"

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# Semver-like: MAJOR.MINOR.PATCH with optional -prerelease and +build. ASCII digits only ([0-9],
# not \d, which is Unicode-aware in the Rust engine).
VERSION_PATTERN = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
)
VERSION_MAX_LENGTH = 64
# Registry repository path and tag, as the distribution spec allows them.
IMAGE_PATTERN = r"^[a-zA-Z0-9.-]+(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+$"
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
# A relative path: no control characters (NUL, newline, ...). `factory.store.named_files` checks
# that it is relative, uses '/', and stays inside the store's folder.
PATH_PATTERN = r"^[^\x00-\x1f\x7f]+$"

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN, strict=True)]
Version = Annotated[
    str, StringConstraints(pattern=VERSION_PATTERN, max_length=VERSION_MAX_LENGTH, strict=True)
]
RelPath = Annotated[
    str, StringConstraints(pattern=PATH_PATTERN, min_length=1, max_length=1024, strict=True)
]
PlatformName = Literal["linux/amd64", "linux/arm64", "linux/amd64+gpu"]

if set(get_args(PlatformName)) != set(PLATFORM_NAMES):  # pragma: no cover - a coding error
    msg = "the platform table and the manifest schema disagree"
    raise RuntimeError(msg)

ID_RE = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")
VERSION_RE = re.compile(rf"\A(?=.{{1,{VERSION_MAX_LENGTH}}}\Z)" + VERSION_PATTERN[1:-1] + r"\Z")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Base(_Strict):
    """A base image in the registry, built per platform, referenced by tag."""

    image: Annotated[str, StringConstraints(pattern=IMAGE_PATTERN, max_length=255)]
    tag: Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
    platforms: list[PlatformName] = Field(min_length=1)


class Template(_Strict):
    """A Jinja2 Dockerfile template."""

    version: Version
    path: RelPath


class ModuleVersion(_Strict):
    """One version of a fragment module: a Dockerfile snippet without FROM."""

    path: RelPath


class TestSuite(_Strict):
    """A POSIX shell script run inside a container of the built image."""

    __test__ = False  # not a pytest class
    path: RelPath
    timeout_s: int = Field(default=60, ge=1, le=3600)
    # The container's root filesystem is read-only (with a writable tmpfs /tmp) unless a suite
    # says it must write elsewhere.
    read_only_root: bool = True


class Manifest(_Strict):
    """One image to build on each of its platforms."""

    template: Id
    base: Id
    fragments: dict[Id, Version] = Field(min_length=1)
    platforms: list[PlatformName] = Field(min_length=1)
    tests: list[Id] = Field(default_factory=list)
    priority: Literal["normal", "high"] = "normal"
    # Ids of BuildKit secrets the fragments mount (`RUN --mount=type=secret,id=<id>`); the values
    # come from the environment (FACTORY_SECRET_<ID>) at build time, never from the store.
    build_secrets: list[Id] = Field(default_factory=list)

    def build_fields(self) -> dict:
        """The fields that shape the image (not its tests, not its priority)."""
        fields = {"template": self.template, "base": self.base, "fragments": dict(self.fragments)}
        if self.build_secrets:
            fields["build_secrets"] = sorted(self.build_secrets)
        return fields


class ManifestStore(_Strict):
    """The whole store: bases, templates, modules, test suites and manifests."""

    # An int, not Literal[1]: a Literal accepts true and 1.0 as 1, even in strict mode.
    schema_version: int
    bases: dict[Id, Base] = Field(default_factory=dict)
    templates: dict[Id, Template] = Field(default_factory=dict)
    modules: dict[Id, dict[Version, ModuleVersion]] = Field(default_factory=dict)
    test_suites: dict[Id, TestSuite] = Field(default_factory=dict)
    manifests: dict[Id, Manifest] = Field(default_factory=dict)

    @field_validator("schema_version")
    @classmethod
    def _known_schema_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            kind = "schema_version"
            template = (
                "unsupported schema_version {got}; this Factory reads schema_version {expected}"
            )
            raise PydanticCustomError(kind, template, {"got": value, "expected": SCHEMA_VERSION})
        return value


# The model of each entry of the store's id-keyed sections (`modules` is keyed by id, then version,
# and its entries are ModuleVersions).
SECTION_MODELS: dict[str, type[BaseModel]] = {
    "bases": Base,
    "templates": Template,
    "test_suites": TestSuite,
    "manifests": Manifest,
}


def secret_env_name(secret_id: str) -> str:
    """The environment variable a build secret's value comes from."""
    return SECRET_ENV_PREFIX + secret_id.upper().replace("-", "_")
