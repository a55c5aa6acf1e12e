"""DAGSTER_HOME and its dagster.yaml are inputs like any other: a home that cannot hold an
instance, a config Dagster refuses, a lock path taken by something else are each a message naming
what is wrong, never a traceback, and an operator's dagster.yaml is never overwritten."""

import pytest
from click.testing import CliRunner

from factory.cli.main import main
from factory.services.dagster_home import INSTANCE_CONFIG, first_open_lock, write_instance_config
from factory.settings import SettingsError
from factory_assets.instance import open_instance
from factory_assets.launcher import _open_instance

REFUSED = "telemetry:\n  enabled: maybe\n"  # Dagster's schema wants a boolean
OPERATORS = "storage:\n  sqlite:\n    base_dir: 7\nunknown_key: 1\n"  # names its storage


def test_a_home_that_is_a_file(tmp_path):
    home = tmp_path / "home"
    home.write_text("not a folder")
    with pytest.raises(SettingsError, match="cannot hold the Dagster instance: File exists"):
        write_instance_config(home)
    assert home.read_text() == "not a folder"


def test_a_dagster_yaml_that_is_a_folder(tmp_path):
    (tmp_path / "dagster.yaml").mkdir()
    with pytest.raises(SettingsError, match=r"Is a directory \(.*dagster\.yaml\)"):
        write_instance_config(tmp_path)


def test_an_operators_dagster_yaml_is_left_alone_and_a_refused_one_named(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))  # written again, and restored after
    (tmp_path / "dagster.yaml").write_text(OPERATORS)
    write_instance_config(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text() == OPERATORS
    for opening in (open_instance, _open_instance):
        with pytest.raises(SettingsError, match=r"cannot be opened \(see its dagster\.yaml\)"):
            opening()


def test_a_config_refused_on_the_workers_own_path(tmp_path, monkeypatch):
    # Names no storage, so a worker would open it with kept engines.
    (tmp_path / "dagster.yaml").write_text(REFUSED)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with pytest.raises(SettingsError, match="DagsterInvalidConfigError"):
        _open_instance()


def test_a_lock_path_taken_by_a_folder(tmp_path):
    (tmp_path / ".factory-open.lock").mkdir()
    with pytest.raises(SettingsError, match=r"Is a directory \(.*\.factory-open\.lock\)"):
        with first_open_lock(tmp_path):
            pass


@pytest.mark.parametrize("case", ["home is a file", "config refused"])
def test_factory_status_says_what_is_wrong(tmp_path, monkeypatch, case):
    home = tmp_path / "home"
    if case == "home is a file":
        home.write_text("x")
        expected = "cannot hold the Dagster instance"
    else:
        home.mkdir()
        (home / "dagster.yaml").write_text(OPERATORS)
        expected = "cannot be opened (see its dagster.yaml)"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("FACTORY_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 1, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_the_project_config_is_written_into_a_new_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "new"))  # written again, and restored after
    home = write_instance_config(tmp_path / "new")
    assert (home / "dagster.yaml").read_bytes() == INSTANCE_CONFIG.read_bytes()
