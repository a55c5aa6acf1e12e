"""An engine is asked once per process for what does not change: its API version and its ID.
A worker builds many combinations on one engine, each with a new Engine."""

import docker
import pytest

from factory.build import engine as engine_module
from factory.build.engine import Engine
from factory.services.embedded import docker_host

pytestmark = pytest.mark.integration


@pytest.fixture
def host(services, monkeypatch) -> str:
    monkeypatch.setattr(engine_module, "_API_VERSIONS", {})
    monkeypatch.setattr(engine_module, "_ENGINE_IDS", {})
    return docker_host(services)


def test_a_second_engine_on_the_same_host_asks_neither_version_nor_id(host, monkeypatch):
    asked = []
    version, info = docker.APIClient.version, docker.APIClient.info

    def counted_version(self, *args, **kwargs):
        asked.append("version")
        return version(self, *args, **kwargs)

    def counted_info(self, *args, **kwargs):
        asked.append("info")
        return info(self, *args, **kwargs)

    monkeypatch.setattr(docker.APIClient, "version", counted_version)
    monkeypatch.setattr(docker.APIClient, "info", counted_info)
    first, second = Engine(host), Engine(host)
    try:
        engine_id = first.engine_id()
        assert engine_id and asked == ["version", "info"]
        assert second.engine_id() == engine_id
        assert second.client.api.api_version == first.client.api.api_version
        assert second.client.images.list() is not None  # the remembered version is spoken
        assert asked == ["version", "info"]
    finally:
        first.client.close()
        second.client.close()
