"""`load_store`: every bad input is a StoreError whose problems name the file and the field path.

Tables list (what to break, where the problem is reported, what the message says). Each case also
checks that nothing but StoreError escapes and that every problem names the store file.
"""

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import factory.store.load as store_module
from factory.errors import Problem, StoreError
from factory.platforms import BY_NAME, BY_SLUG
from factory.store.load import MAX_STORE_BYTES, LoadedStore, load_store
from factory.store.named_files import MAX_FILE_BYTES, StoreFile
from tests.unit.store.test_manifest_models import BAD_IDS
from tests.unit.store_factory import FILES, valid_store_dict, write_store

ID_RULE = "is not a valid id (lowercase letters, digits, '_' and '-', 1 to 63 characters"
VERSION_RULE = "is not a valid version (semver-like MAJOR.MINOR.PATCH"
PLATFORMS_EXPECTED = "expected 'linux/amd64', 'linux/arm64' or 'linux/amd64+gpu'"


def problems_of(path: Path) -> list[Problem]:
    """The problems `load_store` reports; fails the test if it loads or raises anything else."""
    with pytest.raises(StoreError) as exc:
        load_store(path)
    problems = exc.value.problems
    assert problems, "a StoreError always lists at least one problem"
    for problem in problems:
        assert problem.file == str(path), problem
        assert "\n" not in problem.location, "a location is one line"
        assert str(problem).startswith(str(path))
    return problems


def only_problem(path: Path) -> Problem:
    problems = problems_of(path)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def assert_one(path: Path, location: str, *fragments: str) -> Problem:
    problem = only_problem(path)
    assert problem.location == location, str(problem)
    for fragment in fragments:
        assert fragment in problem.message, str(problem)
    return problem


def key_location(*parts: str) -> str:
    """What the report shows for a path of keys: plain words dotted, anything else quoted."""
    out = ""
    for part in parts:
        if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _holder(data, keys):
    """The container in which keys[-1] of the path data[k1][k2]... is set or deleted."""
    for key in keys[:-1]:
        data = data[key]
    return data


def setter(*keys, value):
    """A mutate function that sets data[k1][k2]... = value."""

    def mutate(data):
        _holder(data, keys)[keys[-1]] = value

    return mutate


def deleter(*keys):
    def mutate(data):
        del _holder(data, keys)[keys[-1]]

    return mutate


def values_at(keys: tuple[str, ...], *cases: tuple, at: str | None = None) -> list[tuple]:
    """Table rows (mutate, location, message), one per (value, message) case: the value set at
    `keys`, its problem reported at `at`, or at those keys when not given."""
    location = at or key_location(*keys)
    return [(setter(*keys, value=value), location, message) for value, message in cases]


def missing(*keys: str) -> tuple:
    """The table row of a required field deleted."""
    return deleter(*keys), key_location(*keys), "required field is missing"


# --- a valid store ----------------------------------------------------------------------------


def test_valid_store_loads(tmp_path):
    path = write_store(tmp_path)
    loaded = load_store(path)
    assert isinstance(loaded, LoadedStore)
    assert loaded.path == path
    assert loaded.root == path.parent
    assert set(loaded.files) == set(FILES)
    for rel, text in FILES.items():
        file = loaded.files[rel]
        assert isinstance(file, StoreFile)
        assert file.rel_path == rel
        assert file.text == text
        assert file.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert loaded.template_file("service").rel_path == "templates/service.Dockerfile.j2"
    assert loaded.module_file("core", "0.2.0").text == FILES["modules/core/0.2.0.Dockerfile"]
    assert loaded.suite_file("http").rel_path == "tests/http.sh"
    assert loaded.manifest("web").priority == "high"
    assert re.fullmatch(r"[0-9a-f]{64}", loaded.sha256)


def test_load_store_accepts_a_string_path(tmp_path):
    assert load_store(str(write_store(tmp_path))).model.schema_version == 1


def test_unknown_manifest_id_names_the_known_ones(tmp_path):
    loaded = load_store(write_store(tmp_path))
    with pytest.raises(KeyError, match=r"unknown manifest id 'nope'.*known: llm_factory, web"):
        loaded.manifest("nope")


def test_combinations_in_stable_order(tmp_path):
    loaded = load_store(write_store(tmp_path))
    amd64, arm64, gpu = BY_NAME["linux/amd64"], BY_NAME["linux/arm64"], BY_NAME["linux/amd64+gpu"]
    assert loaded.combinations() == [
        ("llm_factory", amd64),
        ("llm_factory", arm64),
        ("llm_factory", gpu),
        ("web", amd64),
    ]
    assert loaded.combinations(manifest_ids=["web"]) == [("web", amd64)]
    assert loaded.combinations(platforms=["linux/amd64"]) == [
        ("llm_factory", amd64),
        ("web", amd64),
    ]
    assert loaded.combinations(platforms=["linux_amd64_gpu"]) == [("llm_factory", gpu)]
    assert loaded.combinations(manifest_ids=["web"], platforms=["linux/arm64"]) == []
    assert loaded.combinations(manifest_ids=["nope"]) == []
    assert loaded.combinations(manifest_ids=[], platforms=[]) == loaded.combinations()


def test_partition_keys_per_platform(tmp_path):
    loaded = load_store(write_store(tmp_path))
    assert loaded.partition_keys(BY_SLUG["linux_amd64"]) == ["llm_factory", "web"]
    assert loaded.partition_keys(BY_SLUG["linux_arm64"]) == ["llm_factory"]
    assert loaded.partition_keys(BY_SLUG["linux_amd64_gpu"]) == ["llm_factory"]


def test_partition_keys_are_the_combinations(tmp_path):
    loaded = load_store(write_store(tmp_path))
    for platform in BY_NAME.values():
        expected = [mid for mid, p in loaded.combinations() if p == platform]
        assert loaded.partition_keys(platform) == sorted(expected)


def test_gpu_platform_runs_on_an_amd64_base(tmp_path):
    path = write_store(
        tmp_path, setter("manifests", "web", "platforms", value=["linux/amd64", "linux/amd64+gpu"])
    )
    assert load_store(path).partition_keys(BY_SLUG["linux_amd64_gpu"]) == ["llm_factory", "web"]


def test_store_without_manifests_is_valid(tmp_path):
    path = write_store(tmp_path, setter("manifests", value={}))
    loaded = load_store(path)
    assert loaded.combinations() == []
    assert loaded.partition_keys(BY_SLUG["linux_amd64"]) == []


def test_sha256_is_stable_and_follows_named_files(tmp_path):
    path = write_store(tmp_path)
    root = path.parent
    first = load_store(path).sha256
    assert load_store(path).sha256 == first, "same store, same sha256"

    os.utime(root / "tests/smoke.sh", (1, 1))
    (root / "notes.txt").write_text("not named by the store")
    assert load_store(path).sha256 == first, "mtimes and unnamed files do not count"

    fragment = root / "modules/core/0.2.0.Dockerfile"
    original = fragment.read_text()
    fragment.write_text(original + "RUN true\n")
    changed = load_store(path)
    assert changed.sha256 != first, "a named file's content changes the store's sha256"
    assert (
        changed.module_file("core", "0.2.0").sha256
        != load_store(path).module_file("core", "0.1.0").sha256
    )

    fragment.write_text(original)
    assert load_store(path).sha256 == first, "and changing it back restores it"

    (root / "tests/http.sh").write_text("#!/bin/sh\nexit 1\n")
    assert load_store(path).sha256 != first, "a test suite counts too"


def test_sha256_follows_the_json(tmp_path):
    first = load_store(write_store(tmp_path / "a")).sha256
    assert load_store(write_store(tmp_path / "b")).sha256 == first, "independent of the folder"
    changed = write_store(tmp_path / "c", setter("test_suites", "smoke", "timeout_s", value=61))
    assert load_store(changed).sha256 != first


def test_named_path_with_dotdot_that_stays_inside_is_fine(tmp_path):
    path = write_store(
        tmp_path,
        setter("templates", "service", "path", value="modules/../templates/service.Dockerfile.j2"),
    )
    assert (
        load_store(path).template_file("service").text == FILES["templates/service.Dockerfile.j2"]
    )


def test_symlink_inside_the_store_is_fine(tmp_path):
    path = write_store(tmp_path, setter("test_suites", "http", "path", value="tests/alias.sh"))
    (path.parent / "tests/alias.sh").symlink_to("smoke.sh")
    assert load_store(path).suite_file("http").text == FILES["tests/smoke.sh"]


def test_store_reached_through_a_symlink(tmp_path):
    path = write_store(tmp_path)
    link = tmp_path / "link.json"
    link.symlink_to(path)
    # Files are looked up beside the path given (here tmp_path), where there are none.
    problems = problems_of(link)
    assert {p.message.split('"')[1] for p in problems} == set(FILES)


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


# --- references between entries --------------------------------------------------------------


UNKNOWN_REFERENCES = [
    *values_at(
        ("manifests", "web", "template"), ("nope", 'unknown template "nope" (known: service)')
    ),
    *values_at(
        ("manifests", "web", "base"), ("nope", 'unknown base "nope" (known: amd64only, busybox)')
    ),
    *values_at(
        ("manifests", "web", "fragments", "nope"),
        ("0.1.0", 'unknown module "nope" (known: core, light, security)'),
    ),
    *values_at(
        ("manifests", "web", "fragments", "core"),
        ("9.9.9", 'unknown version "9.9.9" of module "core" (known: 0.1.0, 0.2.0)'),
    ),
    *values_at(
        ("manifests", "web", "tests"),
        (["smoke", "nope"], 'unknown test suite "nope" (known: http, smoke)'),
        (["smoke", "smoke"], 'test suite "smoke" is listed twice'),
        at="manifests.web.tests[1]",
    ),
    *values_at(
        ("manifests", "web", "platforms"),
        (["linux/amd64", "linux/amd64"], 'platform "linux/amd64" is listed twice'),
        at="manifests.web.platforms[1]",
    ),
    *values_at(
        ("bases", "busybox", "platforms"),
        (["linux/arm64", "linux/amd64", "linux/arm64"], 'platform "linux/arm64" is listed twice'),
        at="bases.busybox.platforms[2]",
    ),
    *values_at(
        ("templates",),
        ({}, 'unknown template "service" (known: none)'),
        at="manifests.llm_factory.template",
    ),
]


@pytest.mark.parametrize(("mutate", "location", "message"), UNKNOWN_REFERENCES)
def test_unknown_references(tmp_path, mutate, location, message):
    problems = problems_of(write_store(tmp_path, mutate))
    assert (location, True) in [(p.location, message in p.message) for p in problems], problems


def test_unknown_references_are_all_listed(tmp_path):
    def mutate(data):
        data["manifests"]["web"].update(template="t2", base="b2", tests=["s2"])
        data["manifests"]["web"]["fragments"] = {"m2": "0.1.0", "core": "0.0.9"}

    problems = problems_of(write_store(tmp_path, mutate))
    assert [p.location for p in problems] == [
        "manifests.web.template",
        "manifests.web.base",
        "manifests.web.fragments.m2",
        "manifests.web.fragments.core",
        "manifests.web.tests[0]",
    ]


# --- platforms --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["linux/386", "linux/arm64/v8", "LINUX/AMD64", "linux/amd64 ", "linux_amd64", "gpu", ""]
)
def test_platform_not_in_the_table(tmp_path, name):
    path = write_store(
        tmp_path, setter("manifests", "web", "platforms", value=["linux/amd64", name])
    )
    assert_one(
        path, "manifests.web.platforms[1]", f"{json.dumps(name)} is not allowed", PLATFORMS_EXPECTED
    )


def test_base_platform_not_in_the_table(tmp_path):
    path = write_store(
        tmp_path, setter("bases", "busybox", "platforms", value=["linux/amd64", "windows/amd64"])
    )
    assert_one(path, "bases.busybox.platforms[1]", '"windows/amd64" is not allowed')


def test_platform_the_base_does_not_support(tmp_path):
    path = write_store(
        tmp_path,
        setter(
            "manifests", "web", "platforms", value=["linux/amd64", "linux/amd64+gpu", "linux/arm64"]
        ),
    )
    assert_one(
        path,
        "manifests.web.platforms[2]",
        'linux/arm64 is not supported by base "amd64only" (it has: linux/amd64)',
    )


def test_gpu_platform_needs_an_amd64_base(tmp_path):
    def mutate(data):
        data["bases"]["busybox"]["platforms"] = ["linux/arm64"]
        data["manifests"]["llm_factory"]["platforms"] = ["linux/arm64", "linux/amd64+gpu"]

    assert_one(
        write_store(tmp_path, mutate),
        "manifests.llm_factory.platforms[1]",
        'linux/amd64+gpu is not supported by base "busybox" (it has: linux/arm64)',
    )


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


# --- named files ------------------------------------------------------------------------------


def _outside_file(tmp_path: Path) -> Path:
    outside = tmp_path / "outside.j2"
    outside.write_text("FROM scratch\n")
    return outside


def case_dotdot(tmp_path, root):
    _outside_file(tmp_path)
    return "../outside.j2", "leaves the store's folder with '..'"


def case_deep_dotdot(tmp_path, root):
    _outside_file(tmp_path)
    return "templates/../../outside.j2", "leaves the store's folder with '..'"


def case_dotdot_missing(tmp_path, root):
    return "../../../../etc/passwd", "leaves the store's folder with '..'"


def case_absolute(tmp_path, root):
    return str(_outside_file(tmp_path)), "is absolute; paths are relative to the store's folder"


def case_absolute_inside(tmp_path, root):
    return str(root / "templates/service.Dockerfile.j2"), "is absolute"


def case_file_symlink_out(tmp_path, root):
    (root / "templates/evil.j2").symlink_to(_outside_file(tmp_path))
    return "templates/evil.j2", "leaves the store's folder through a symlink"


def case_relative_file_symlink_out(tmp_path, root):
    _outside_file(tmp_path)
    (root / "templates/evil.j2").symlink_to("../../outside.j2")
    return "templates/evil.j2", "leaves the store's folder through a symlink"


def case_dir_symlink_out(tmp_path, root):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "x.j2").write_text("FROM scratch\n")
    (root / "shared").symlink_to(shared, target_is_directory=True)
    return "shared/x.j2", "leaves the store's folder through a symlink"


def case_symlink_to_etc(tmp_path, root):
    (root / "etc").symlink_to("/etc", target_is_directory=True)
    return "etc/passwd", "leaves the store's folder through a symlink"


def case_symlink_loop(tmp_path, root):
    (root / "templates/loop1.j2").symlink_to("loop2.j2")
    (root / "templates/loop2.j2").symlink_to("loop1.j2")
    return "templates/loop1.j2", "symlink loop"


def case_self_symlink(tmp_path, root):
    (root / "templates/self.j2").symlink_to("self.j2")
    return "templates/self.j2", "symlink loop"


def case_dangling_symlink(tmp_path, root):
    (root / "templates/dangling.j2").symlink_to("gone.j2")
    return "templates/dangling.j2", "is a symlink to a file that does not exist"


def case_missing(tmp_path, root):
    return "templates/missing.j2", f'no such file "templates/missing.j2" in {root}'


def case_missing_folder(tmp_path, root):
    return "nowhere/missing.j2", 'no such file "nowhere/missing.j2"'


def case_directory(tmp_path, root):
    return "templates", '"templates" is a directory, not a file'


def case_dot(tmp_path, root):
    return ".", '"." is a directory, not a file'


def case_file_as_folder(tmp_path, root):
    return "templates/service.Dockerfile.j2/x", "a part of the path is a file, not a folder"


def case_backslash(tmp_path, root):
    return "templates\\service.Dockerfile.j2", "separate folders with '/'"


def case_fifo(tmp_path, root):
    os.mkfifo(root / "templates/fifo.j2")
    return "templates/fifo.j2", "is not a regular file"


def case_not_utf8(tmp_path, root):
    (root / "templates/latin1.j2").write_bytes(b"FROM x\n# caf\xe9\n")
    return "templates/latin1.j2", "is not valid UTF-8 (byte 0xe9 at offset 12, line 2 column 6)"


def case_too_big(tmp_path, root):
    (root / "templates/big.j2").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    return "templates/big.j2", f"is {MAX_FILE_BYTES + 1} bytes; files the store names may be at"


def case_name_too_long(tmp_path, root):
    return "templates/" + "x" * 300, "cannot be resolved"


PATH_CASES = [
    case_dotdot,
    case_deep_dotdot,
    case_dotdot_missing,
    case_absolute,
    case_absolute_inside,
    case_file_symlink_out,
    case_relative_file_symlink_out,
    case_dir_symlink_out,
    case_symlink_to_etc,
    case_symlink_loop,
    case_self_symlink,
    case_dangling_symlink,
    case_missing,
    case_missing_folder,
    case_directory,
    case_dot,
    case_file_as_folder,
    case_backslash,
    case_fifo,
    case_not_utf8,
    case_too_big,
    case_name_too_long,
]


@pytest.mark.parametrize("case", PATH_CASES, ids=lambda c: c.__name__.removeprefix("case_"))
def test_named_file_problems(tmp_path, case):
    path = write_store(tmp_path)
    rel, message = case(tmp_path, path.parent)
    mutate = setter("templates", "service", "path", value=rel)
    path = write_store(tmp_path, mutate)
    assert_one(path, "templates.service.path", json.dumps(rel), message)


@pytest.mark.parametrize(
    ("mutate", "location"),
    [
        (
            setter("modules", "core", "0.2.0", "path", value="modules/core/9.9.9.Dockerfile"),
            "modules.core.0.2.0.path",
        ),
        (setter("test_suites", "http", "path", value="tests/none.sh"), "test_suites.http.path"),
    ],
)
def test_named_file_locations(tmp_path, mutate, location):
    assert_one(write_store(tmp_path, mutate), location, "no such file")


def test_named_file_deleted(tmp_path):
    path = write_store(tmp_path)
    (path.parent / "tests/smoke.sh").unlink()
    assert_one(path, "test_suites.smoke.path", 'no such file "tests/smoke.sh"')


def test_named_file_unreadable(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = write_store(tmp_path)
    target = path.parent / "tests/smoke.sh"
    target.chmod(0)
    try:
        assert_one(path, "test_suites.smoke.path", "cannot be read: Permission denied")
    finally:
        target.chmod(0o644)


# --- the JSON itself --------------------------------------------------------------------------


def write_raw(tmp_path: Path, content: bytes | str) -> Path:
    path = write_store(tmp_path)  # the named files, so only the JSON is at fault
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


VALID_JSON = json.dumps(valid_store_dict(), indent=2)


IDS = {"ids": lambda v: repr(v)[:40] if isinstance(v, str | bytes) else None}


@pytest.mark.parametrize(
    ("content", "location", "message"),
    [
        (
            '{"schema_version": 1,\n  "bases": {,}\n}',
            "line 2 column 13",
            "malformed JSON: Expecting property name enclosed in double quotes",
        ),
        ('{"schema_version": 1,}', "line 1 column 22", "malformed JSON"),
        ('{"schema_version": 1', "line 1 column 21", "malformed JSON"),
        ("{'schema_version': 1}", "line 1 column 2", "malformed JSON"),
        ('{"schema_version": 1} trailing', "line 1 column 23", "malformed JSON: Extra data"),
        ("\ufeff" + VALID_JSON, "line 1 column 1", "malformed JSON: Unexpected UTF-8 BOM"),
        (
            b'{"schema_version": 1,\n "x": "caf\xe9"}',
            "line 2 column 11",
            "not valid UTF-8 (byte 0xe9 at offset 32)",
        ),
        (b"\xff\xfe{\x00}\x00", "line 1 column 1", "not valid UTF-8 (byte 0xff at offset 0)"),
    ],
    **IDS,
)
def test_malformed_json_at_a_position(tmp_path, content, location, message):
    assert_one(write_raw(tmp_path, content), location, message)


NESTED_TOO_DEEPLY = "malformed JSON: arrays or objects are nested too deeply"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("  \n", "the file is empty"),
        ("[]", "the store must be a JSON object with schema_version 1, not an array"),
        ("[" + VALID_JSON + "]", "must be a JSON object with schema_version 1, not an array"),
        ('"store"', 'not the string "store"'),
        ("1", "not the number 1"),
        ("null", "not null"),
        ("[" * 100_000, NESTED_TOO_DEEPLY),
        ('{"a":' * 100_000, NESTED_TOO_DEEPLY),
        ("[" * 100_000 + "]" * 100_000, NESTED_TOO_DEEPLY),
        ('{"schema_version": NaN}', "malformed JSON: NaN is not valid JSON"),
        ('{"schema_version": -Infinity}', "malformed JSON: -Infinity is not valid JSON"),
        (
            '{"schema_version": 1' + "0" * 5000 + "}",
            "malformed JSON: a number has 5001 digits (at most 64)",
        ),
    ],
    **IDS,
)
def test_unusable_json_is_a_problem_of_the_whole_file(tmp_path, content, message):
    assert_one(write_raw(tmp_path, content), "", message)


def test_deep_nesting_inside_a_valid_store_is_a_problem_not_a_crash(tmp_path):
    # Deep enough to parse, then handed to validation and to the messages.
    deep = "[" * 500 + "]" * 500
    text = VALID_JSON.replace('"priority": "high"', f'"priority": {deep}', 1)
    assert text != VALID_JSON
    problems = problems_of(write_raw(tmp_path, text))
    assert [p.location for p in problems] == ["manifests.web.priority"]


@pytest.mark.parametrize(
    ("old", "new", "location"),
    [
        ('"schema_version": 1,', '"schema_version": 1, "schema_version": 1,', "schema_version"),
        (
            '"core": "0.1.0",',
            '"core": "0.1.0", "core": "0.1.0",',
            "manifests.llm_factory.fragments.core",
        ),
        ('"web": {', '"web": {"priority": "normal", ', "manifests.web.priority"),
        ('"smoke": {', '"smoke": {"timeout_s": 5, ', "test_suites.smoke.timeout_s"),
    ],
)
def test_duplicate_keys(tmp_path, old, new, location):
    compact = json.dumps(valid_store_dict())
    assert old in compact
    path = write_raw(tmp_path, compact.replace(old, new, 1))
    key = location.rsplit(".", 1)[-1]
    assert_one(path, location, f'duplicate key "{key}"', "may appear once")


def test_duplicate_keys_are_all_listed_with_other_problems(tmp_path):
    compact = json.dumps(valid_store_dict())
    compact = compact.replace('"schema_version": 1,', '"schema_version": 1, "schema_version": 1,')
    compact = compact.replace('"priority": "high"', '"priority": "high", "priority": "top"')
    problems = problems_of(write_raw(tmp_path, compact))
    assert [(p.location, p.message.split(":")[0]) for p in problems] == [
        ("manifests.web.priority", 'duplicate key "priority"'),
        ("schema_version", 'duplicate key "schema_version"'),
        ("manifests.web.priority", "\"top\" is not allowed; expected 'normal' or 'high'"),
    ]


def test_store_over_max_store_bytes(tmp_path):
    padding = " " * (MAX_STORE_BYTES + 1 - len(VALID_JSON))
    path = write_raw(tmp_path, VALID_JSON + padding)
    assert path.stat().st_size == MAX_STORE_BYTES + 1
    assert_one(path, "", f"the store is {MAX_STORE_BYTES + 1} bytes; at most {MAX_STORE_BYTES}")


def test_store_at_max_store_bytes_is_read(tmp_path):
    padding = " " * (MAX_STORE_BYTES - len(VALID_JSON))
    path = write_raw(tmp_path, VALID_JSON + padding)
    assert path.stat().st_size == MAX_STORE_BYTES
    assert load_store(path).model.schema_version == 1


def test_store_limit_is_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "MAX_STORE_BYTES", 100)
    assert_one(write_store(tmp_path), "", "at most 100 are read")


# --- the store path ---------------------------------------------------------------------------


def test_store_missing(tmp_path):
    path = tmp_path / "nope.json"
    assert_one(path, "", "no such file (set FACTORY_MANIFEST_STORE or pass --manifest-store)")


def test_store_is_a_directory(tmp_path):
    path = write_store(tmp_path).parent
    assert_one(path, "", "is a directory; give the store's JSON file")


def test_store_is_a_symlink_loop(tmp_path):
    path = tmp_path / "loop.json"
    path.symlink_to(path)
    assert_one(path, "", "cannot be read: Too many levels of symbolic links")


def test_store_is_a_fifo(tmp_path):
    path = tmp_path / "fifo.json"
    os.mkfifo(path)
    assert_one(path, "", "is not a regular file")


# --- several problems at once -----------------------------------------------------------------


def test_several_problems_are_all_listed(tmp_path):
    def mutate(data):
        data["bases"]["busybox"]["digest"] = "sha256:x"  # schema
        data["test_suites"]["smoke"]["timeout_s"] = "60"  # schema
        data["manifests"]["web"]["template"] = "nope"  # reference
        data["manifests"]["web"]["platforms"].append("linux/arm64")  # base support
        data["modules"]["light"]["0.1.0"]["path"] = "modules/light/9.Dockerfile"  # missing file
        data["templates"]["service"]["path"] = "../outside.j2"  # leaves the folder

    path = write_store(tmp_path, mutate)
    problems = problems_of(path)
    assert sorted((p.location, p.message.split(" (")[0]) for p in problems) == sorted(
        [
            ("bases.busybox.digest", 'unknown field "digest"'),
            ("test_suites.smoke.timeout_s", 'expected an integer, got the string "60"'),
            ("manifests.web.template", 'unknown template "nope"'),
            ("manifests.web.platforms[1]", 'linux/arm64 is not supported by base "amd64only"'),
            (
                "modules.light.0.1.0.path",
                f'no such file "modules/light/9.Dockerfile" in {path.parent}',
            ),
            (
                "templates.service.path",
                "\"../outside.j2\" leaves the store's folder with '..'; paths must stay inside it",
            ),
        ]
    )
    with pytest.raises(StoreError) as exc:
        load_store(path)
    message = str(exc.value)
    assert message.startswith("the manifest store has 6 problems:\n")
    for problem in problems:
        assert f"  - {path}: {problem.location}: {problem.message}" in message


def test_invalid_section_does_not_cascade(tmp_path):
    # `bases` is not an object: that is one problem, not one per manifest naming a base.
    path = write_store(tmp_path, setter("bases", value=["busybox"]))
    assert_one(path, "bases", "expected an object, got an array of 1 item")


def test_invalid_entry_does_not_stop_other_checks(tmp_path):
    def mutate(data):
        data["manifests"]["llm_factory"]["priority"] = 1  # llm_factory itself is invalid
        data["manifests"]["web"]["tests"] = ["nope"]  # web is valid but names an unknown suite

    problems = problems_of(write_store(tmp_path, mutate))
    assert [p.location for p in problems] == [
        "manifests.llm_factory.priority",
        "manifests.web.tests[0]",
    ]


def test_store_error_lists_one_problem(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(StoreError, match=r"^the manifest store has 1 problem:\n  - "):
        load_store(path)


# --- fuzzing: whatever is in the JSON, the answer is a LoadedStore or a StoreError --------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, (*prefix, i))


STORE_PATHS = list(_paths(valid_store_dict()))


def _load_and_check(path: Path) -> None:
    """Load; anything but a LoadedStore or a well-formed StoreError fails the test."""
    error: StoreError | None = None
    try:
        load_store(path)
    except StoreError as exc:
        error = exc
    if error is None:
        return
    assert error.problems
    for problem in error.problems:
        assert problem.file == str(path)
        assert "\n" not in problem.location
        str(problem).encode("utf-8")  # printable


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("fuzz"))


@settings(max_examples=300, deadline=None)
@given(
    where=st.sampled_from(STORE_PATHS),
    value=JSON_VALUES,
    new_key=st.one_of(st.none(), st.text(max_size=12)),
)
def test_fuzz_replace_any_value(fuzz_store, where, value, new_key):
    data = valid_store_dict()
    if not where:
        data = value
    else:
        target = _holder(data, where)
        if new_key is not None and isinstance(target, dict):
            target[new_key] = value
        else:
            target[where[-1]] = value
    fuzz_store.write_text(json.dumps(data))
    _load_and_check(fuzz_store)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzz_raw_bytes(fuzz_store, raw):
    fuzz_store.write_bytes(raw)
    _load_and_check(fuzz_store)
