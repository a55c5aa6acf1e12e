"""`factory run` with a setting the code location reads at import that cannot be used: one
message naming the variable, exit 1, no traceback, nothing run. The code location is loaded by
the workers' fork server, which must neither crash on it nor hide it."""

import dagster as dg
import pytest

from factory.records.store import LocalRecordStore
from tests.integration.dagster.test_cli import BIN, env_for, run
from tests.integration.stores import example_store_copy, manifest

pytestmark = pytest.mark.integration

CASES = {
    "unknown executor": ("FACTORY_EXECUTOR", "bogus"),
    "matrix history not a number": ("FACTORY_MATRIX_HISTORY", "lots"),
    "matrix history negative": ("FACTORY_MATRIX_HISTORY", "-3"),
    "retry delay not a number": ("FACTORY_RETRY_DELAY_S", "soon"),
    "retry delay infinite": ("FACTORY_RETRY_DELAY_S", "inf"),
    "nightly cron junk": ("FACTORY_NIGHTLY_CRON", "not a cron"),
    "prewarm cron with a control character": ("FACTORY_PREWARM_CRON", "0 2 * * *\x1b[2J"),
    "retention cron with six fields": ("FACTORY_RETENTION_CRON", "0 0 4 * * 0"),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", CASES)
def test_run_names_a_setting_the_code_location_cannot_use(services, tmp_path, case):
    name, value = CASES[case]
    store = example_store_copy(tmp_path, {"hostile_env": manifest()})
    env = {**env_for(tmp_path, store), name: value}
    proc = run([BIN / "factory", "run", "--manifest-id", "hostile_env"], env, timeout=240)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "\x1b" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and name in errors[0], output[-3000:]
    assert list(LocalRecordStore(tmp_path / "data").records()) == []
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert instance.get_runs() == []


# An operator's dagster.yaml (it names its storage) with a compute log manager Dagster cannot use:
# (the entry, which line of `factory run`'s output says so, what that line names).
COMPUTE_LOG_CASES = {
    "module that cannot be imported": (
        "compute_logs:\n  module: no_such_log_module\n  class: NoSuchManager\n",
        "NOT RECORDED",
        "no_such_log_module",
    ),
    "not a class": (
        "compute_logs:\n  module: os\n  class: system\n",
        "NOT RECORDED",
        "run failed:",
    ),
    "not a mapping": ("compute_logs: 42\n", "Error: ", "dagster.yaml"),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", COMPUTE_LOG_CASES)
def test_run_names_a_compute_log_manager_it_cannot_use(services, tmp_path, case):
    """Such a manager fails each run before any step, or the instance's opening: one line says
    what is wrong, not just "run failed", and nothing is recorded."""
    entry, marker, named = COMPUTE_LOG_CASES[case]
    store = example_store_copy(tmp_path, {"hostile_logs": manifest()})
    env = env_for(tmp_path, store)
    home = env["DAGSTER_HOME"]
    with open(f"{home}/dagster.yaml", "a") as config:
        config.write(f"\nstorage:\n  sqlite:\n    base_dir: {home}\n{entry}")
    proc = run([BIN / "factory", "run", "--manifest-id", "hostile_logs"], env, timeout=240)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    [line] = [line for line in output.splitlines() if marker in line]
    assert named in line, output[-3000:]
    assert list(LocalRecordStore(tmp_path / "data").records()) == []
