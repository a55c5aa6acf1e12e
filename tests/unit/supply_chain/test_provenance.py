"""Provenance: the in-toto statement's shape, its determinism, and what validation refuses."""

import copy
import json

import pytest

from factory.records.store import json_bytes
from factory.store.keys import BUILD_RECIPE_VERSION
from factory.supply_chain.provenance import (
    BUILD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    build_provenance,
    validate_provenance,
)

IMAGE_DIGEST = "sha256:" + "c" * 64
BASE_DIGEST = "sha256:" + "a" * 64
TEMPLATE_SHA = "1" * 64
FRAGMENT_SHAS = {"security": "2" * 64, "core": "3" * 64, "light": "4" * 64}
BUILD_KEY = "b" * 64
RECORD_KEY = "d" * 64
IMAGE_REF = f"127.0.0.1:5000/factory/llm_factory:linux_arm64-{BUILD_KEY[:12]}"


def record_inputs() -> dict:
    """An `inputs` section as `CombinationInputs.as_record()` writes it."""
    return {
        "manifest_sha256": "e" * 64,
        "build_fields_sha256": "f" * 64,
        "template": {"name": "service", "version": "0.1.0", "sha256": TEMPLATE_SHA},
        "fragments": [
            {"name": name, "version": "0.1.0", "sha256": sha} for name, sha in FRAGMENT_SHAS.items()
        ],
        "test_suites": [{"name": "smoke", "sha256": "5" * 64, "timeout_s": 60}],
        "base": {
            "name": "busybox",
            "ref": "127.0.0.1:5000/factory/base/busybox:1.35",
            "digest": BASE_DIGEST,
            "pinned": f"127.0.0.1:5000/factory/base/busybox@{BASE_DIGEST}",
        },
    }


def make_doc(**overrides) -> dict:
    fields = {
        "build_id": "0b6c1f2e-7a1d-4f55-9a51-3c1f0c2b9e10",
        "image_ref": IMAGE_REF,
        "image_digest": IMAGE_DIGEST,
        "platform": "linux/arm64",
        "inputs": record_inputs(),
        "build_key": BUILD_KEY,
        "record_key": RECORD_KEY,
        "dagster_run_id": "7c0f6a4e-1111-2222-3333-444455556666",
        "started_at": "2026-11-26T10:00:00.000000Z",
        "finished_at": "2026-11-26T10:01:00.000000Z",
        "builder_id": "urn:factory:builder:test",
    }
    fields.update(overrides)
    return build_provenance(**fields)


def test_statement_has_the_image_as_subject_and_a_slsa_v1_predicate():
    doc = make_doc()
    assert doc["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == PREDICATE_TYPE == "https://slsa.dev/provenance/v1"
    assert doc["subject"] == [
        {"name": "127.0.0.1:5000/factory/llm_factory", "digest": {"sha256": "c" * 64}}
    ]
    definition = doc["predicate"]["buildDefinition"]
    assert definition["buildType"] == BUILD_TYPE
    assert definition["externalParameters"] == {
        "manifest_id": "llm_factory",
        "platform": "linux/arm64",
    }
    internal = definition["internalParameters"]
    assert internal["build_key"] == BUILD_KEY
    assert internal["record_key"] == RECORD_KEY
    assert internal["recipe_version"] == BUILD_RECIPE_VERSION
    assert internal["build_id"] == "0b6c1f2e-7a1d-4f55-9a51-3c1f0c2b9e10"
    assert internal["test_suites"] == [{"name": "smoke", "sha256": "5" * 64, "timeout_s": 60}]
    run = doc["predicate"]["runDetails"]
    assert run["builder"] == {"id": "urn:factory:builder:test"}
    assert run["metadata"] == {
        "invocationId": "7c0f6a4e-1111-2222-3333-444455556666",
        "startedOn": "2026-11-26T10:00:00.000000Z",
        "finishedOn": "2026-11-26T10:01:00.000000Z",
    }


def test_every_resolved_dependency_is_present_with_its_digest_in_build_order():
    deps = make_doc()["predicate"]["buildDefinition"]["resolvedDependencies"]
    got = [(d["uri"], d["digest"]) for d in deps]
    assert got == [
        ("oci://127.0.0.1:5000/factory/base/busybox:1.35", {"sha256": "a" * 64}),
        ("factory-store:templates/service@0.1.0", {"sha256": TEMPLATE_SHA}),
        ("factory-store:modules/security@0.1.0", {"sha256": FRAGMENT_SHAS["security"]}),
        ("factory-store:modules/core@0.1.0", {"sha256": FRAGMENT_SHAS["core"]}),
        ("factory-store:modules/light@0.1.0", {"sha256": FRAGMENT_SHAS["light"]}),
    ]


def test_same_build_gives_the_same_bytes_whatever_the_input_key_order():
    first = json_bytes(make_doc())
    shuffled = {k: record_inputs()[k] for k in reversed(list(record_inputs()))}
    shuffled["base"] = dict(reversed(list(shuffled["base"].items())))
    assert json_bytes(make_doc(inputs=shuffled)) == first
    assert json_bytes(make_doc()) == first
    assert json.loads(first) == make_doc()


def test_manifest_id_can_be_given_and_run_id_may_be_absent():
    doc = make_doc(manifest_id="other", dagster_run_id=None)
    assert doc["predicate"]["buildDefinition"]["externalParameters"]["manifest_id"] == "other"
    assert "invocationId" not in doc["predicate"]["runDetails"]["metadata"]
    validate_provenance(doc)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"image_digest": "sha256:" + "c" * 12}, "image_digest"),
        ({"image_digest": "sha512:" + "c" * 64}, "image_digest"),
        ({"image_ref": "llm_factory:latest"}, "registry"),
        ({"build_key": "B" * 64}, "internalParameters.build_key"),
        ({"builder_id": ""}, "builder.id"),
        ({"finished_at": "2026-11-26T09:00:00Z"}, "finishedOn"),
        ({"started_at": "yesterday"}, "startedOn"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make_doc(**overrides)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("base", "digest"), "inputs.base.digest"),
        (("template", "sha256"), "inputs.template.sha256"),
        (("fragments", 1, "sha256"), r"inputs.fragments\[1\].sha256"),
        (("fragments", 0, "version"), r"inputs.fragments\[0\].version"),
    ],
)
def test_broken_inputs_are_refused_naming_the_field(path, field):
    inputs = record_inputs()
    target = inputs
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = "not-a-digest" if "sha256" in field or "digest" in field else ""
    with pytest.raises(ValueError, match=field):
        make_doc(inputs=inputs)


def _set(doc: dict, path: tuple, value: object) -> None:
    for part in path[:-1]:
        doc = doc[part]
    if value is _DELETE:
        del doc[path[-1]]
    else:
        doc[path[-1]] = value


_DELETE = object()
_DEF = ("predicate", "buildDefinition")


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("_type",), "https://in-toto.io/Statement/v0.1", "_type"),
        (("_type",), _DELETE, "_type"),
        (("subject",), [], "subject"),
        (("subject", 0, "digest"), {"sha1": "a" * 40}, r"subject\[0\].digest.sha256"),
        (("subject", 0, "digest", "sha256"), "C" * 64, r"subject\[0\].digest.sha256"),
        (("subject", 0, "name"), _DELETE, r"subject\[0\].name"),
        (("predicateType",), "https://slsa.dev/provenance/v0.2", "predicateType"),
        (("predicate",), [], "predicate"),
        ((*_DEF, "buildType"), "not a uri", "buildType"),
        ((*_DEF, "externalParameters", "platform"), _DELETE, "externalParameters.platform"),
        ((*_DEF, "internalParameters", "record_key"), "r" * 64, "internalParameters.record_key"),
        ((*_DEF, "internalParameters", "recipe_version"), _DELETE, "recipe_version"),
        ((*_DEF, "resolvedDependencies"), [], "resolvedDependencies"),
        (
            (*_DEF, "resolvedDependencies", 0, "digest", "sha256"),
            "a" * 63,
            r"resolvedDependencies\[0\].digest.sha256",
        ),
        ((*_DEF, "resolvedDependencies", 3, "uri"), _DELETE, r"resolvedDependencies\[3\].uri"),
        ((*_DEF, "resolvedDependencies", 2), "modules/core", r"resolvedDependencies\[2\]"),
        (("predicate", "runDetails", "builder"), _DELETE, "builder"),
        (("predicate", "runDetails", "metadata", "invocationId"), 42, "invocationId"),
        (
            ("predicate", "runDetails", "metadata", "finishedOn"),
            "2026-11-26T10:01:00",
            "finishedOn",
        ),
    ],
)
def test_validate_catches_broken_documents_naming_the_field(path, value, field):
    doc = copy.deepcopy(make_doc())
    validate_provenance(doc)
    _set(doc, path, value)
    with pytest.raises(ValueError, match=field):
        validate_provenance(doc)


@pytest.mark.parametrize("doc", [None, [], "statement", 1])
def test_validate_refuses_what_is_not_an_object(doc):
    with pytest.raises(ValueError, match="provenance"):
        validate_provenance(doc)


def test_validate_accepts_fields_other_tools_add():
    doc = make_doc()
    doc["predicate"]["runDetails"]["byproducts"] = [{"name": "log", "digest": {"sha256": "0" * 64}}]
    doc["subject"][0]["digest"]["sha512"] = "0" * 128
    validate_provenance(doc)
