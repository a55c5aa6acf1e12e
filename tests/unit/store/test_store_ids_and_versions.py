"""`load_store` on bad ids and versions, wherever the store uses them as keys or references:
the problem quotes the value and states the rule, at a location that shows the key as it is."""

import json

import pytest

from tests.unit.store.store_problems import assert_one, key_location, problems_of, setter
from tests.unit.store.test_manifest_models import BAD_IDS
from tests.unit.store_factory import write_store

ID_RULE = "is not a valid id (lowercase letters, digits, '_' and '-', 1 to 63 characters"
VERSION_RULE = "is not a valid version (semver-like MAJOR.MINOR.PATCH"


# --- ids --------------------------------------------------------------------------------------

# BAD_IDS (test_manifest_models.py): the ids the models refuse, refused where a store names them.


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        ("Upper", "manifests.Upper"),
        ("a" * 64, "manifests." + "a" * 64),
        ("-lead", 'manifests["-lead"]'),
        ("../x", 'manifests["../x"]'),
        ("a b", 'manifests["a b"]'),
        ("x;rm", 'manifests["x;rm"]'),
        ("a/b", 'manifests["a/b"]'),
        ("a\nb", 'manifests["a\\nb"]'),
        ("", 'manifests[""]'),
    ],
)
def test_bad_id_locations_are_quoted_when_not_plain(tmp_path, bad, shown):
    def mutate(data):
        data["manifests"][bad] = data["manifests"]["web"]

    assert_one(write_store(tmp_path, mutate), shown, f"the key {json.dumps(bad)}", ID_RULE)
    assert key_location("manifests", bad) == shown


def _copy_entry(section, existing, *inner):
    """Add a copy of an existing entry under a new (bad) key, so the key is the only problem."""

    def make(bad):
        def mutate(data):
            target = data[section]
            for key in inner:
                target = target[key]
            target[bad] = json.loads(json.dumps(target[existing]))

        return mutate

    return make


KEY_PLACES = {
    "manifests": (_copy_entry("manifests", "web"), ("manifests",)),
    "bases": (_copy_entry("bases", "busybox"), ("bases",)),
    "templates": (_copy_entry("templates", "service"), ("templates",)),
    "modules": (_copy_entry("modules", "core"), ("modules",)),
    "test_suites": (_copy_entry("test_suites", "smoke"), ("test_suites",)),
    "fragments": (
        _copy_entry("manifests", "core", "web", "fragments"),
        ("manifests", "web", "fragments"),
    ),
}


@pytest.mark.parametrize("place", sorted(KEY_PLACES))
@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_as_keys(tmp_path, place, bad):
    make, prefix = KEY_PLACES[place]
    path = write_store(tmp_path, make(bad))
    assert_one(path, key_location(*prefix, bad), f"the key {json.dumps(bad)}", ID_RULE)


REFERENCE_PLACES = {
    "template": (
        lambda bad: setter("manifests", "web", "template", value=bad),
        "manifests.web.template",
    ),
    "base": (lambda bad: setter("manifests", "web", "base", value=bad), "manifests.web.base"),
    "tests": (
        lambda bad: setter("manifests", "web", "tests", value=["smoke", bad]),
        "manifests.web.tests[1]",
    ),
}


@pytest.mark.parametrize("place", sorted(REFERENCE_PLACES))
@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_as_references(tmp_path, place, bad):
    make, location = REFERENCE_PLACES[place]
    path = write_store(tmp_path, make(bad))
    assert_one(path, location, f"{json.dumps(bad)} {ID_RULE}")


def test_renamed_base_is_an_unknown_reference(tmp_path):
    def mutate(data):
        data["bases"]["Busybox"] = data["bases"].pop("busybox")

    problems = problems_of(write_store(tmp_path, mutate))
    assert [p.location for p in problems] == ["bases.Busybox", "manifests.llm_factory.base"]
    assert ID_RULE in problems[0].message
    assert problems[1].message == 'unknown base "busybox" (known: Busybox, amd64only)'


def test_invalid_base_is_not_also_reported_as_unknown(tmp_path):
    # The base is there but invalid: its own problem is reported, not "unknown base" as well.
    path = write_store(tmp_path, setter("bases", "busybox", "tag", value=135))
    assert_one(path, "bases.busybox.tag", "expected a string, got the number 135")


# --- versions ---------------------------------------------------------------------------------

BAD_VERSIONS = ["1.0", "01.0.0", "v1.0.0", "1.0.0\n", "1.0.0;rm", "1\u0661.0.0", "1.0.0-", "latest"]


@pytest.mark.parametrize("bad", BAD_VERSIONS)
def test_bad_versions(tmp_path, bad):
    shown = json.dumps(bad)
    path = write_store(tmp_path, setter("templates", "service", "version", value=bad))
    assert_one(path, "templates.service.version", f"{shown} {VERSION_RULE}")

    path = write_store(tmp_path, setter("manifests", "web", "fragments", "core", value=bad))
    assert_one(path, "manifests.web.fragments.core", f"{shown} {VERSION_RULE}")

    def rename(data):
        data["modules"]["light"][bad] = data["modules"]["light"]["0.1.0"]

    path = write_store(tmp_path, rename)
    assert_one(path, key_location("modules", "light", bad), f"the key {shown} {VERSION_RULE}")


def test_version_too_long(tmp_path):
    long = "1.0.0-" + "a" * 60
    path = write_store(tmp_path, setter("templates", "service", "version", value=long))
    assert_one(path, "templates.service.version", "at most 64 characters")
