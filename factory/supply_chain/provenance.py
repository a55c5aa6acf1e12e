"""Build provenance: an in-toto Statement v1 with a SLSA Provenance v1 predicate per built image.

The record says what Factory built and how it went; the provenance says the same thing in the form
supply-chain tools (slsa-verifier, policy engines, registries that index attestations) read: the
image digest as the subject, and every input that shaped it (the base image's per-platform digest,
the template and each fragment with their sha256) as resolved dependencies. It is written to
`provenance/<build_id>.intoto.json` and the record carries its sha256, so `factory verify` can tell
whether either was changed afterwards.

The document is a plain dict built only from its arguments (no clock, no host facts), so the same
build gives the same bytes when serialized with sorted keys (`RecordStore.put_json` does that).
No Dagster import: the pipeline, the CLI and the tests share this module.
"""

import re
from datetime import datetime
from typing import Any

from factory.registry.names import split_reference
from factory.store.keys import BUILD_RECIPE_VERSION

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# What kind of build this is; consumers key their policy on it. The `v1` is the version of this
# buildType's parameter shape (externalParameters/internalParameters below), not of the recipe:
# bump it when those fields change meaning.
BUILD_TYPE = "urn:factory:buildtype:container-image:v1"
# How template and fragment dependencies are named: a file of the manifest store, by store path.
STORE_URI_SCHEME = "factory-store"
# Base images are registry references; `oci://` makes them URIs without claiming Docker Hub.
IMAGE_URI_SCHEME = "oci"

_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
_SHA256_DIGEST = re.compile(r"\Asha256:([0-9a-f]{64})\Z")
_URI = re.compile(r"\A[A-Za-z][A-Za-z0-9+.-]*:\S+\Z")

__all__ = [
    "BUILD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "build_provenance",
    "image_repository",
    "resolved_dependencies",
    "sha256_hex_of",
    "validate_provenance",
]


def sha256_hex_of(digest: str, *, field: str) -> str:
    """The hex part of a `sha256:<64 hex>` digest; ValueError naming `field` otherwise.

    in-toto digests are `{"sha256": "<hex>"}` maps, while registries and records write
    `sha256:<hex>`: this is the one place the two forms meet, and the place a truncated or
    non-sha256 digest is refused instead of being attested.
    """
    match = _SHA256_DIGEST.match(digest) if isinstance(digest, str) else None
    if match is None:
        msg = f"{field}: expected a digest `sha256:<64 lowercase hex>`, got {digest!r}"
        raise ValueError(msg)
    return match.group(1)


def image_repository(image_ref: str) -> str:
    """`host:port/path/name:tag` (or `@sha256:...`) -> `host:port/path/name`, the subject's name.

    Factory's refs always name their registry; a ref without one (or without a tag or digest) is
    refused with ValueError, as `registry.split_reference` does.
    """
    registry, repository, _ = split_reference(image_ref)
    return f"{registry}/{repository}"


def resolved_dependencies(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The base image, the template and each fragment as SLSA ResourceDescriptors, in build order.

    `inputs` is a record's `inputs` section. Fragments keep the manifest's order because the order
    is part of the Dockerfile. Test suites are not here: they do not shape the image (they are in
    internalParameters, since they decide the record key).
    """
    base = _section(inputs, "base", dict)
    template = _section(inputs, "template", dict)
    fragments = _section(inputs, "fragments", list)
    deps = [
        {
            "name": f"base:{_text(base, 'name', 'inputs.base')}",
            "uri": f"{IMAGE_URI_SCHEME}://{_text(base, 'ref', 'inputs.base')}",
            "digest": {"sha256": sha256_hex_of(base.get("digest"), field="inputs.base.digest")},
        },
        _store_file("templates", template, "inputs.template"),
    ]
    for i, fragment in enumerate(fragments):
        if not isinstance(fragment, dict):
            msg = f"inputs.fragments[{i}]: expected an object with name, version and sha256"
            raise ValueError(msg)
        deps.append(_store_file("modules", fragment, f"inputs.fragments[{i}]"))
    return deps


def build_provenance(
    *,
    build_id: str,
    image_ref: str,
    image_digest: str,
    platform: str,
    inputs: dict[str, Any],
    build_key: str,
    record_key: str,
    dagster_run_id: str | None,
    started_at: str,
    finished_at: str,
    builder_id: str,
    manifest_id: str | None = None,
) -> dict[str, Any]:
    """The in-toto Statement (SLSA Provenance v1 predicate) of one built image.

    `inputs` is the record's `inputs` section (base ref and digest, template and fragments with
    version and sha256, test suites). `manifest_id` defaults to the repository's last path
    component, which is the manifest id for every image Factory names (`keys.image_ref`).
    `dagster_run_id` becomes `runDetails.metadata.invocationId`; a build run outside Dagster
    (None) has no invocation id rather than an invented one. The result is checked with
    `validate_provenance` before it is returned, so a bad digest or key fails here, naming the
    field, and is never attested.
    """
    repository = image_repository(image_ref)
    if manifest_id is None:
        manifest_id = repository.rsplit("/", 1)[-1]
    dependencies = resolved_dependencies(inputs)  # first: it checks that `inputs` is an object
    # The suites decide the record key (with their content and timeout), not the image.
    suites = [
        {k: s[k] for k in ("name", "sha256", "timeout_s") if k in s}
        for s in inputs.get("test_suites") or []
        if isinstance(s, dict)
    ]
    metadata: dict[str, Any] = {"startedOn": started_at, "finishedOn": finished_at}
    if dagster_run_id:
        metadata["invocationId"] = dagster_run_id
    doc = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {
                "name": repository,
                "digest": {"sha256": sha256_hex_of(image_digest, field="image_digest")},
            }
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"manifest_id": manifest_id, "platform": platform},
                "internalParameters": {
                    "build_id": build_id,
                    "build_key": build_key,
                    "record_key": record_key,
                    "recipe_version": BUILD_RECIPE_VERSION,
                    "image_ref": image_ref,
                    "test_suites": suites,
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {"builder": {"id": builder_id}, "metadata": metadata},
        },
    }
    validate_provenance(doc)
    return doc


def validate_provenance(doc: Any) -> None:
    """Check a provenance document's structure and digests; ValueError naming the first bad field.

    This is what Factory itself relies on (the fields `factory verify` reads and the digests it
    compares), not the whole in-toto/SLSA schema: extra fields that other tools add are allowed.
    """
    _require(isinstance(doc, dict), "provenance", "expected a JSON object", doc)
    _equals(doc, "_type", STATEMENT_TYPE, "_type")
    subjects = doc.get("subject")
    _require(
        isinstance(subjects, list) and subjects, "subject", "expected a non-empty list", subjects
    )
    for i, subject in enumerate(subjects):
        where = f"subject[{i}]"
        _require(isinstance(subject, dict), where, "expected an object", subject)
        _nonempty_text(subject, "name", f"{where}.name")
        _digest_map(subject, f"{where}.digest")
    _equals(doc, "predicateType", PREDICATE_TYPE, "predicateType")

    predicate = _object(doc, "predicate", "predicate")
    definition = _object(predicate, "buildDefinition", "predicate.buildDefinition")
    where = "predicate.buildDefinition"
    _matches(definition.get("buildType"), _URI, f"{where}.buildType", "expected a URI")
    external = _object(definition, "externalParameters", f"{where}.externalParameters")
    for name in ("manifest_id", "platform"):
        _nonempty_text(external, name, f"{where}.externalParameters.{name}")
    internal = _object(definition, "internalParameters", f"{where}.internalParameters")
    for name in ("build_key", "record_key"):
        field = f"{where}.internalParameters.{name}"
        _matches(internal.get(name), _HEX64, field, "expected 64 lowercase hex")
    _nonempty_text(internal, "recipe_version", f"{where}.internalParameters.recipe_version")
    deps = definition.get("resolvedDependencies")
    _require(
        isinstance(deps, list) and deps,
        f"{where}.resolvedDependencies",
        "expected a non-empty list (at least the base image and the template)",
        deps,
    )
    for i, dep in enumerate(deps):
        at = f"{where}.resolvedDependencies[{i}]"
        _require(isinstance(dep, dict), at, "expected an object", dep)
        _matches(dep.get("uri"), _URI, f"{at}.uri", "expected a URI")
        _digest_map(dep, f"{at}.digest")

    run = _object(predicate, "runDetails", "predicate.runDetails")
    builder = _object(run, "builder", "predicate.runDetails.builder")
    _nonempty_text(builder, "id", "predicate.runDetails.builder.id")
    metadata = _object(run, "metadata", "predicate.runDetails.metadata")
    if "invocationId" in metadata:
        _nonempty_text(metadata, "invocationId", "predicate.runDetails.metadata.invocationId")
    started = _timestamp(metadata, "startedOn", "predicate.runDetails.metadata.startedOn")
    finished = _timestamp(metadata, "finishedOn", "predicate.runDetails.metadata.finishedOn")
    _require(
        finished >= started,
        "predicate.runDetails.metadata.finishedOn",
        f"is before startedOn ({metadata['startedOn']})",
        metadata["finishedOn"],
    )


# --- helpers ----------------------------------------------------------------------------------


def _store_file(folder: str, entry: dict[str, Any], where: str) -> dict[str, Any]:
    name = _text(entry, "name", where)
    version = _text(entry, "version", where)
    return {
        "name": f"{folder}/{name}",
        "uri": f"{STORE_URI_SCHEME}:{folder}/{name}@{version}",
        "digest": {"sha256": _hex(entry.get("sha256"), f"{where}.sha256")},
    }


def _section(inputs: Any, key: str, kind: type) -> Any:
    if not isinstance(inputs, dict):
        msg = f"inputs: expected the record's inputs object, got {type(inputs).__name__}"
        raise ValueError(msg)
    value = inputs.get(key)
    if not isinstance(value, kind):
        msg = f"inputs.{key}: expected {'a list' if kind is list else 'an object'}, got {value!r}"
        raise ValueError(msg)
    return value


def _text(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        msg = f"{where}.{key}: expected a non-empty string, got {value!r}"
        raise ValueError(msg)
    return value


def _hex(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        msg = f"{where}: expected a sha256 as 64 lowercase hex, got {value!r}"
        raise ValueError(msg)
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _require(condition: bool, field: str, expected: str, value: Any) -> None:
    if not condition:
        msg = f"provenance field {field}: {expected}, got {_short(value)}"
        raise ValueError(msg)


def _matches(value: Any, pattern: re.Pattern, field: str, expected: str) -> None:
    """`value` must be a string `pattern` matches."""
    _require(isinstance(value, str) and bool(pattern.match(value)), field, expected, value)


def _equals(doc: dict, key: str, wanted: str, field: str) -> None:
    _require(doc.get(key) == wanted, field, f"expected {wanted!r}", doc.get(key))


def _object(parent: dict, key: str, field: str) -> dict:
    value = parent.get(key)
    _require(isinstance(value, dict), field, "expected an object", value)
    return value


def _nonempty_text(parent: dict, key: str, field: str) -> str:
    value = parent.get(key)
    _require(isinstance(value, str) and bool(value.strip()), field, "expected a string", value)
    return value


def _digest_map(parent: dict, field: str) -> None:
    """in-toto DigestSet: Factory always writes sha256, so sha256 must be there and well-formed."""
    digest = parent.get("digest")
    _require(isinstance(digest, dict), field, "expected an object like {'sha256': '<hex>'}", digest)
    _matches(digest.get("sha256"), _HEX64, f"{field}.sha256", "expected 64 lowercase hex")


def _timestamp(parent: dict, key: str, field: str) -> datetime:
    """An RFC 3339 time with a zone (records write `...Z`); naive times are ambiguous."""
    value = parent.get(key)
    parsed = None
    if isinstance(value, str) and "T" in value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        msg = (
            f"provenance field {field}: expected an RFC 3339 UTC time like "
            f"2026-01-01T00:00:00Z, got {_short(value)}"
        )
        raise ValueError(msg)
    return parsed
