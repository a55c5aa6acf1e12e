"""The pydantic models of the manifest store (schema_version 1), without the filesystem."""

import pytest
from pydantic import ValidationError

from factory.platforms import PLATFORM_NAMES
from factory.store.manifest import (
    ID_RE,
    VERSION_RE,
    Base,
    Manifest,
    ManifestStore,
    ModuleVersion,
    Template,
    TestSuite,
)
from tests.unit.store_factory import valid_store_dict

GOOD_IDS = ["a", "0", "llm_factory", "a-b_c", "9lives", "a" * 63, "x" + "-" * 62]
BAD_IDS = [
    "Upper",
    "a" * 64,
    "-lead",
    "_lead",
    "../x",
    "a b",
    "x;rm",
    "a/b",
    "a\nb",
    "abc\n",
    "",
    "caf\u00e9",
    "a.b",
    "a:b",
    "$(id)",
]
GOOD_VERSIONS = ["0.1.0", "1.2.3", "10.20.30", "1.0.0-rc.1", "1.0.0+build.5", "1.0.0-alpha-1+b.2"]
BAD_VERSIONS = [
    "1.0",
    "1",
    "01.0.0",
    "1.02.0",
    "v1.0.0",
    "1.0.0\n",
    "1.0.0;rm",
    "1.0.0 ",
    "1\u0661.0.0",  # an Arabic-Indic digit: Unicode \d would accept it
    "1.0.0-",
    "1.0.0+",
    "",
    "1.0.0-" + "a" * 60,  # longer than 64
]


def errors(exc: ValidationError) -> list[tuple[tuple, str]]:
    return [(tuple(e["loc"]), e["type"]) for e in exc.errors()]


def refusals(model, data) -> list[tuple[tuple, str]]:
    """The (location, error type) pairs `model` refuses `data` with; fails if it accepts it."""
    with pytest.raises(ValidationError) as exc:
        model.model_validate(data)
    return errors(exc.value)


def base_dict(**changes) -> dict:
    return {"image": "r/x", "tag": "1", "platforms": ["linux/amd64"], **changes}


def manifest_dict(**changes) -> dict:
    d = valid_store_dict()["manifests"]["llm_factory"]
    d.update(changes)
    return d


def test_valid_store_dict_validates():
    store = ManifestStore.model_validate(valid_store_dict())
    assert store.schema_version == 1
    assert set(store.manifests) == {"llm_factory", "web"}
    m = store.manifests["llm_factory"]
    assert list(m.fragments) == ["security", "core", "light"], "fragment order is kept"
    assert m.platforms == ["linux/amd64", "linux/arm64", "linux/amd64+gpu"]
    assert store.modules["core"]["0.2.0"] == ModuleVersion(path="modules/core/0.2.0.Dockerfile")


def test_defaults():
    m = Manifest.model_validate(
        {"template": "t", "base": "b", "fragments": {"core": "0.1.0"}, "platforms": ["linux/amd64"]}
    )
    assert m.tests == []
    assert m.priority == "normal"
    assert TestSuite.model_validate({"path": "tests/x.sh"}).timeout_s == 60
    store = ManifestStore.model_validate({"schema_version": 1})
    assert store.bases == store.templates == store.modules == {}
    assert store.test_suites == store.manifests == {}


def test_build_fields_are_the_image_shaping_fields_only():
    m = Manifest.model_validate(manifest_dict(priority="high", tests=["smoke"]))
    assert m.build_fields() == {
        "template": "service",
        "base": "busybox",
        "fragments": {"security": "0.1.0", "core": "0.1.0", "light": "0.1.0"},
    }
    other = Manifest.model_validate(manifest_dict(priority="normal", tests=[]))
    assert other.build_fields() == m.build_fields()
    fields = m.build_fields()
    fields["fragments"]["core"] = "9.9.9"
    assert m.fragments["core"] == "0.1.0", "build_fields returns a copy"


def test_models_are_frozen():
    m = Manifest.model_validate(manifest_dict())
    with pytest.raises(ValidationError):
        m.priority = "high"  # type: ignore[misc]


@pytest.mark.parametrize("good", GOOD_IDS)
def test_good_ids(good):
    assert ID_RE.match(good)
    assert Manifest.model_validate(manifest_dict(template=good)).template == good
    ManifestStore.model_validate({"schema_version": 1, "test_suites": {good: {"path": "t.sh"}}})


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_are_refused_as_values_and_as_keys(bad):
    assert not ID_RE.match(bad), "the Python regex agrees with the schema"
    mismatch = "string_pattern_mismatch"
    assert refusals(Manifest, manifest_dict(base=bad)) == [(("base",), mismatch)]
    assert refusals(Manifest, manifest_dict(tests=["smoke", bad])) == [(("tests", 1), mismatch)]
    as_key = {"schema_version": 1, "test_suites": {bad: {"path": "t.sh"}}}
    assert refusals(ManifestStore, as_key) == [(("test_suites", bad, "[key]"), mismatch)]


@pytest.mark.parametrize("good", GOOD_VERSIONS)
def test_good_versions(good):
    assert VERSION_RE.match(good)
    assert Template.model_validate({"version": good, "path": "t.j2"}).version == good
    Manifest.model_validate(manifest_dict(fragments={"core": good}))


@pytest.mark.parametrize("bad", BAD_VERSIONS)
def test_bad_versions(bad):
    assert not VERSION_RE.match(bad), "the Python regex agrees with the schema"
    for model, data, loc in [
        (Template, {"version": bad, "path": "t.j2"}, ("version",)),
        (Manifest, manifest_dict(fragments={"core": bad}), ("fragments", "core")),
        (
            ManifestStore,
            {"schema_version": 1, "modules": {"core": {bad: {"path": "m"}}}},
            ("modules", "core", bad, "[key]"),
        ),
    ]:
        assert [where for where, _ in refusals(model, data)] == [loc]


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (ManifestStore, {"schema_version": 1, "extra": {}}),
        (Base, base_dict(image="r:5000/x/y", extra=1)),
        (Template, {"version": "0.1.0", "path": "t.j2", "extra": 1}),
        (ModuleVersion, {"path": "m", "extra": 1}),
        (TestSuite, {"path": "t.sh", "extra": 1}),
        (Manifest, manifest_dict(extra=1)),
    ],
)
def test_unknown_fields_are_errors_in_every_model(model, data):
    assert refusals(model, data) == [(("extra",), "extra_forbidden")]


@pytest.mark.parametrize(
    ("model", "data", "loc", "kind"),
    [
        (TestSuite, {"path": "t.sh", "timeout_s": "60"}, ("timeout_s",), "int_type"),
        (TestSuite, {"path": "t.sh", "timeout_s": True}, ("timeout_s",), "int_type"),
        (TestSuite, {"path": "t.sh", "timeout_s": 60.0}, ("timeout_s",), "int_type"),
        (TestSuite, {"path": "t.sh", "timeout_s": 0}, ("timeout_s",), "greater_than_equal"),
        (TestSuite, {"path": "t.sh", "timeout_s": 3601}, ("timeout_s",), "less_than_equal"),
        (TestSuite, {"path": 5}, ("path",), "string_type"),
        (TestSuite, {"path": ""}, ("path",), "string_too_short"),
        (TestSuite, {"path": "a\nb"}, ("path",), "string_pattern_mismatch"),
        (TestSuite, {"path": "a\x00b"}, ("path",), "string_pattern_mismatch"),
        (TestSuite, {"path": "a\ud800"}, ("path",), "string_unicode"),
        (Template, {"version": 1, "path": "t"}, ("version",), "string_type"),
        (Manifest, manifest_dict(fragments=["core"]), ("fragments",), "dict_type"),
        (Manifest, manifest_dict(fragments={}), ("fragments",), "too_short"),
        (Manifest, manifest_dict(platforms=[]), ("platforms",), "too_short"),
        (Manifest, manifest_dict(platforms="linux/amd64"), ("platforms",), "list_type"),
        (Manifest, manifest_dict(tests="smoke"), ("tests",), "list_type"),
        (Manifest, manifest_dict(priority="urgent"), ("priority",), "literal_error"),
        (Manifest, manifest_dict(priority=None), ("priority",), "literal_error"),
        (Manifest, manifest_dict(template=None), ("template",), "string_type"),
        (Base, base_dict(platforms=[]), ("platforms",), "too_short"),
        (Base, base_dict(tag="1;rm"), ("tag",), "string_pattern_mismatch"),
        (Base, base_dict(image="r/X"), ("image",), "string_pattern_mismatch"),
        (Base, base_dict(image="r/x y"), ("image",), "string_pattern_mismatch"),
        (Base, base_dict(image="noslash"), ("image",), "string_pattern_mismatch"),
    ],
)
def test_wrong_types_and_values(model, data, loc, kind):
    assert refusals(model, data) == [(loc, kind)]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (2, "schema_version"),
        (0, "schema_version"),
        ("1", "int_type"),
        (True, "int_type"),  # a Literal[1] would accept true (True == 1)
        (1.0, "int_type"),  # ... and 1.0
        (None, "int_type"),
    ],
)
def test_schema_version_must_be_exactly_1(value, kind):
    assert refusals(ManifestStore, {"schema_version": value}) == [(("schema_version",), kind)]


def test_schema_version_is_required():
    assert refusals(ManifestStore, {}) == [(("schema_version",), "missing")]


@pytest.mark.parametrize("name", PLATFORM_NAMES)
def test_known_platforms(name):
    assert Manifest.model_validate(manifest_dict(platforms=[name])).platforms == [name]


@pytest.mark.parametrize(
    "name", ["linux/386", "linux/arm64/v8", "LINUX/AMD64", "linux/amd64 ", "linux_amd64", ""]
)
def test_unknown_platforms(name):
    data = manifest_dict(platforms=["linux/amd64", name])
    assert refusals(Manifest, data) == [(("platforms", 1), "literal_error")]
