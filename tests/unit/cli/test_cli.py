"""The `factory` command's answers that need no services: validation and bad input."""

from click.testing import CliRunner

from factory.cli.main import main
from tests.unit.store_factory import write_store


def test_validate_reports_a_valid_store(tmp_path):
    path = write_store(tmp_path)
    result = CliRunner().invoke(main, ["validate", "--manifest-store", str(path)])
    assert result.exit_code == 0, result.output
    assert "valid: 2 manifests, 4 manifest x platform combinations" in result.output


def test_validate_lists_every_problem_and_exits_non_zero(tmp_path):
    def break_it(d):
        d["manifests"]["web"]["fragments"]["core"] = "9.9.9"
        d["manifests"]["llm_factory"]["platforms"].append("linux/s390x")

    path = write_store(tmp_path, break_it)
    result = CliRunner().invoke(main, ["validate", "--manifest-store", str(path)])
    assert result.exit_code == 1
    assert "2 problems" in result.output
    assert "manifests.web.fragments.core" in result.output and "9.9.9" in result.output
    assert "manifests.llm_factory.platforms[3]" in result.output
    assert str(path) in result.output
    assert "Traceback" not in result.output


def test_missing_store_says_what_to_set(tmp_path):
    result = CliRunner().invoke(main, ["validate", "--manifest-store", str(tmp_path / "no.json")])
    assert result.exit_code == 1
    assert "FACTORY_MANIFEST_STORE" in result.output
