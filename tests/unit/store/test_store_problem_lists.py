"""`load_store` on a store with several problems: all of them are listed in one StoreError,
an invalid section or entry does not cascade into more problems nor stop the other checks."""

import pytest

from factory.errors import StoreError
from factory.store.load import load_store
from tests.unit.store.store_problems import assert_one, problems_of, setter
from tests.unit.store_factory import write_store


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
