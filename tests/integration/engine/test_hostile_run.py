"""`factory run` refuses a store whose Dockerfile would escape the pinned base before any build:
a fragment with FROM, a template with `# syntax=evil/frontend`. No run is launched, no image
is built or pushed, no record is written, and the message names the file and the line."""

import json
import urllib.error
import urllib.request

import dagster as dg
import pytest

from factory.records.store import LocalRecordStore
from tests.integration.dagster.test_cli import BIN, env_for, run
from tests.integration.stores import EXAMPLE, example_store_copy, manifest

pytestmark = pytest.mark.integration

CASES = {
    "fragment with FROM": (
        "hostile_from",
        {"modules/evil/0.1.0.Dockerfile": "RUN true\nFROM alpine AS evil\nRUN touch /pwned\n"},
        {"security": "0.1.0", "core": "0.1.0", "evil": "0.1.0"},
        ['"modules/evil/0.1.0.Dockerfile" line 2', "FROM in a fragment"],
    ),
    "template with a syntax directive": (
        "hostile_syntax",
        {
            "templates/service.Dockerfile.j2": "# syntax=evil/frontend\n"
            + (EXAMPLE / "templates/service.Dockerfile.j2").read_text()
        },
        None,
        ['"templates/service.Dockerfile.j2" line 1', "not allowlisted"],
    ),
}


def registry_tags(registry: str, repository: str) -> list[str] | None:
    try:
        with urllib.request.urlopen(
            f"http://{registry}/v2/{repository}/tags/list", timeout=10
        ) as r:
            return json.load(r).get("tags") or []
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", CASES)
def test_run_refuses_an_escaping_dockerfile_before_any_build(services, tmp_path, case):
    manifest_id, files, fragments, words = CASES[case]
    modules = {"evil": {"0.1.0": {"path": "modules/evil/0.1.0.Dockerfile"}}} if fragments else {}
    store = example_store_copy(
        tmp_path, {manifest_id: manifest(fragments)}, files=files, modules=modules
    )
    env = env_for(tmp_path, store)
    before = store.parent.joinpath("manifest.json").read_bytes()
    proc = run([BIN / "factory", "run", "--manifest-id", manifest_id], env, timeout=240)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    assert str(store) in output
    for word in words:
        assert word in output, output[-3000:]
    assert "queued" not in output
    # Nothing happened: no run in the instance, no record, no image in the registry.
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert instance.get_runs() == []
    assert list(LocalRecordStore(tmp_path / "data").records()) == []
    assert registry_tags(services.registry, f"factory/{manifest_id}") is None
    assert registry_tags(services.registry, f"factory/{manifest_id}-cache") is None
    assert store.parent.joinpath("manifest.json").read_bytes() == before
