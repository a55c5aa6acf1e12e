"""`load_store` on entries of the wrong shape: unknown fields at each level, wrong types and
values, and the schema_version. Each is one problem at the field's path."""

import pytest

from tests.unit.store.store_problems import assert_one, deleter, missing, setter, values_at
from tests.unit.store_factory import write_store

# --- unknown fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "location", "allowed"),
    [
        (setter("extra", value=1), "extra", "schema_version, bases, templates, modules"),
        (setter("bases", "busybox", "digest", value="x"), "bases.busybox.digest", "image, tag"),
        (
            setter("templates", "service", "engine", value="j2"),
            "templates.service.engine",
            "version, path",
        ),
        (setter("modules", "core", "0.1.0", "sha", value="x"), "modules.core.0.1.0.sha", "path"),
        (
            setter("test_suites", "smoke", "retries", value=2),
            "test_suites.smoke.retries",
            "path, timeout_s",
        ),
        (
            setter("manifests", "web", "owner", value="me"),
            "manifests.web.owner",
            "template, base, fragments, platforms, tests, priority",
        ),
        (
            setter("manifests", "web", "Template", value="service"),
            "manifests.web.Template",
            "template, base",
        ),
    ],
)
def test_unknown_field_at_each_level(tmp_path, mutate, location, allowed):
    field = location.rsplit(".", 1)[-1]
    assert_one(
        write_store(tmp_path, mutate), location, f'unknown field "{field}"', f"(allowed: {allowed}"
    )


def test_unknown_field_with_an_odd_name(tmp_path):
    path = write_store(tmp_path, setter("manifests", "web", "a.b\n", value=1))
    assert_one(path, 'manifests.web["a.b\\n"]', 'unknown field "a.b\\n"')


# --- wrong types and values -------------------------------------------------------------------


WRONG_TYPES_AND_VALUES = [
    *values_at(
        ("test_suites", "smoke", "timeout_s"),
        ("60", 'expected an integer, got the string "60"'),
        (True, "expected an integer, got true"),
        (60.5, "expected an integer, got the number 60.5"),
        (None, "expected an integer, got null"),
        (0, "greater than or equal to 1"),
        (10**6, "less than or equal to 3600"),
    ),
    *values_at(("templates", "service", "path"), (5, "expected a string, got the number 5")),
    *values_at(("templates", "service", "version"), (1, "expected a string, got the number 1")),
    *values_at(
        ("manifests", "web", "template"), (["service"], "expected a string, got an array of 1 item")
    ),
    *values_at(
        ("manifests", "web", "fragments"),
        (["core", "security"], "expected an object, got an array of 2 items"),
        ({}, "must not be empty"),
    ),
    *values_at(
        ("manifests", "web", "fragments", "core"), (2, "expected a string, got the number 2")
    ),
    *values_at(
        ("manifests", "web", "platforms"),
        ("linux/amd64", 'expected an array, got the string "linux/amd64"'),
        ([], "must not be empty"),
    ),
    *values_at(("manifests", "web", "tests"), ({"smoke": 1}, "expected an array, got an object")),
    *values_at(
        ("manifests", "web", "priority"),
        ("urgent", "\"urgent\" is not allowed; expected 'normal' or 'high'"),
    ),
    *values_at(("manifests", "web"), ([], "expected an object, got an array of 0 items")),
    *values_at(("manifests",), ([], "expected an object, got an array")),
    *values_at(
        ("bases", "busybox"), ("busybox:1.35", 'expected an object, got the string "busybox:1.35"')
    ),
    *values_at(("bases", "busybox", "platforms"), ([], "must not be empty")),
    *values_at(
        ("bases", "busybox", "image"),
        ("Registry/Factory/Busybox", "is not a valid image repository"),
    ),
    *values_at(("bases", "busybox", "tag"), ("1.35;rm -rf /", "is not a valid tag")),
    *values_at(("modules", "core"), (["0.1.0"], "expected an object, got an array")),
    *values_at(
        ("modules", "core", "0.1.0"),
        ("modules/core/0.1.0.Dockerfile", "expected an object, got the string"),
    ),
    *values_at(
        ("test_suites", "smoke", "path"),
        ("tests/smoke\n.sh", "is not a valid path (it contains a control character)"),
        ("", "at least 1 character"),
    ),
    missing("manifests", "web", "base"),
    missing("bases", "busybox", "image"),
    missing("templates", "service", "path"),
]


@pytest.mark.parametrize(("mutate", "location", "message"), WRONG_TYPES_AND_VALUES)
def test_wrong_types_and_values(tmp_path, mutate, location, message):
    assert_one(write_store(tmp_path, mutate), location, message)


def test_long_strings_are_shortened_in_messages(tmp_path):
    path = write_store(tmp_path, setter("manifests", "web", "priority", value="x" * 10_000))
    problem = assert_one(path, "manifests.web.priority", "is not allowed")
    assert len(problem.message) < 300


def test_unpaired_surrogate_escape(tmp_path):
    path = write_store(tmp_path, setter("test_suites", "smoke", "path", value="tests/\ud800.sh"))
    problem = assert_one(path, "test_suites.smoke.path", "is not valid text")
    str(problem).encode("utf-8")  # printable as UTF-8


# --- schema_version ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (2, "unsupported schema_version 2; this Factory reads schema_version 1"),
        (0, "unsupported schema_version 0"),
        ("1", 'expected an integer, got the string "1"'),
        (True, "expected an integer, got true"),
        (1.0, "expected an integer, got the number 1.0"),
        (None, "expected an integer, got null"),
    ],
)
def test_schema_version(tmp_path, value, message):
    assert_one(
        write_store(tmp_path, setter("schema_version", value=value)), "schema_version", message
    )


def test_schema_version_missing(tmp_path):
    path = write_store(tmp_path, deleter("schema_version"))
    assert_one(path, "schema_version", "required field is missing")
