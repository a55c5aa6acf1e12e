"""Build secrets reach the build only through BuildKit secret mounts and leak nowhere."""

import json
import subprocess
import uuid
from pathlib import Path

import dagster as dg
import pytest

from factory.records.store import LocalRecordStore
from factory.services.embedded import docker_host
from factory.settings import Settings
from tests.integration.chain_run import materialize_chain
from tests.integration.stores import example_store_copy, manifest

pytestmark = pytest.mark.integration
# The fragment uses the secret and, carelessly, prints it: the log must still not show it.
FRAGMENT = (
    'RUN --mount=type=secret,id=api_token set -e; : {salt}; t="$(cat /run/secrets/api_token)"; '
    'echo "using token $t"; test "${{#t}}" -gt 20; echo "token checked" > /etc/token-checked\n'
)


def secret_store(tmp_path):
    """A store whose secret-using step is new each time: a cached step or reused image would
    need no secret and print nothing."""
    fragment = FRAGMENT.format(salt=uuid.uuid4().hex)
    return example_store_copy(
        tmp_path,
        {
            "secretive": manifest(
                fragments={"security": "0.1.0", "core": "0.1.0", "withsecret": "0.1.0"}
            )
            | {"build_secrets": ["api_token"]}
        },
        modules={"withsecret": {"0.1.0": {"path": "modules/withsecret/0.1.0.Dockerfile"}}},
        files={"modules/withsecret/0.1.0.Dockerfile": fragment},
    )


def materialize(services, store, data, instance):
    return materialize_chain(
        store, "secretive", registry=services.registry, record_store=data, instance=instance
    )


def test_secret_value_appears_nowhere(services, tmp_path, monkeypatch):
    secret = f"tok-{uuid.uuid4().hex}-{uuid.uuid4().hex}"
    monkeypatch.setenv("FACTORY_SECRET_API_TOKEN", secret)
    data = tmp_path / "data"
    with dg.instance_for_test() as instance:
        result = materialize(services, secret_store(tmp_path), data, instance)
        assert result.success
        events = json.dumps([str(e) for e in instance.all_logs(result.run_id)])
    assert secret not in events

    [record] = LocalRecordStore(data).records()
    assert record.status == "pass"
    log = Path(record.evidence["log"].uri.removeprefix("file://")).read_text()
    assert "using token [secret:api_token]" in log  # it ran, and was redacted
    for path in data.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path

    # Not in any image layer either (docker save writes every layer's tar).
    saved = subprocess.run(
        ["/usr/bin/docker", "save", record.image.ref],
        env={"DOCKER_HOST": docker_host(Settings.from_env())},
        capture_output=True,
        check=True,
    ).stdout
    assert len(saved) > 100_000 and secret.encode() not in saved


def test_missing_secret_is_a_build_error_naming_the_variable(services, tmp_path, monkeypatch):
    monkeypatch.delenv("FACTORY_SECRET_API_TOKEN", raising=False)
    with dg.instance_for_test() as instance:
        result = materialize(services, secret_store(tmp_path), tmp_path / "data", instance)
    assert not result.success
    [record] = LocalRecordStore(tmp_path / "data").records()
    assert record.status == "error" and record.error.stage == "build"
    assert "FACTORY_SECRET_API_TOKEN" in record.error.message
