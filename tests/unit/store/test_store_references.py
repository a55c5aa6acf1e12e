"""`load_store` on entries that name each other: unknown templates, bases, modules, module
versions and test suites, names listed twice, and the platforms a manifest asks of its base."""

import json

import pytest

from tests.unit.store.store_problems import assert_one, problems_of, setter, values_at
from tests.unit.store_factory import write_store

PLATFORMS_EXPECTED = "expected 'linux/amd64', 'linux/arm64' or 'linux/amd64+gpu'"


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
