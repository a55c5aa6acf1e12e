"""`factory services` on the real machine: engine, registry, qemu emulation and base images."""

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from factory.registry.client import RegistryClient
from factory.services import embedded as local_services
from factory.services.embedded import BASE_PLATFORMS, BASE_REPOSITORY, BASE_TAG
from factory.settings import Settings

pytestmark = pytest.mark.integration

DOCKER_CLI = "/usr/bin/docker"  # Debian's 20.10 client, the one that matches the engine
RUN_TIMEOUT_S = 120


def _started(settings: Settings) -> dict:
    state_file = settings.data_dir / "services.json"
    return json.loads(state_file.read_text()) if state_file.exists() else {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_up_again_starts_nothing_new(services):
    before = _started(services)
    lines: list[str] = []
    states = local_services.up(services, echo=lines.append)
    assert all(s.ok for s in states), states
    # The resident worker server leaves once unused for FACTORY_WORKER_IDLE_S (15 min), so an
    # `up` later in the session may start it again; the recorded services it must not.
    assert not [s for s in states if s.changed and s.name != "workers"], states
    assert _started(services) == before
    assert not [line for line in lines if "starting" in line or "pushed" in line], lines
    again = local_services.up(services, echo=lines.append)
    assert not [s for s in again if s.changed], again


def test_base_index_resolves_to_one_image_per_platform(services):
    client = RegistryClient(services.registry)
    offered = client.platforms(BASE_REPOSITORY, BASE_TAG)
    assert set(offered) == set(BASE_PLATFORMS)
    amd64 = client.platform_digest(BASE_REPOSITORY, BASE_TAG, "linux/amd64")
    arm64 = client.platform_digest(BASE_REPOSITORY, BASE_TAG, "linux/arm64")
    assert amd64 != arm64
    # The per-platform tags point at the same images, and a digest resolves to itself.
    assert client.head_digest(BASE_REPOSITORY, f"{BASE_TAG}-linux_amd64") == amd64
    assert client.head_digest(BASE_REPOSITORY, f"{BASE_TAG}-linux_arm64") == arm64
    assert client.platform_digest(BASE_REPOSITORY, arm64, "linux/arm64/v8") == arm64


def test_base_images_are_reproducible(services):
    # Rebuilt from the same Debian packages, the images are byte for byte what the registry has:
    # a registry wipe or another machine gives the same base digests.
    client = RegistryClient(services.registry)
    for oci_platform in BASE_PLATFORMS:
        image = local_services.build_base_image(services, oci_platform, echo=lambda _: None)
        assert image.digest == client.platform_digest(BASE_REPOSITORY, BASE_TAG, oci_platform)


@pytest.mark.parametrize(
    ("oci_platform", "machine"), [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")]
)
def test_base_image_runs_on_each_platform(services, oci_platform, machine):
    env = {**os.environ, "DOCKER_HOST": local_services.docker_host(services)}
    image = f"{services.registry}/{BASE_REPOSITORY}:{BASE_TAG}"
    result = subprocess.run(
        [DOCKER_CLI, "run", "--rm", "--platform", oci_platform, image, "uname", "-m"],
        capture_output=True,
        text=True,
        env=env,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == machine


def test_status_reports_every_part_ok(services):
    states = local_services.status(services)
    assert [s.name for s in states] == [
        "engine",
        "registry",
        "qemu-aarch64",
        *(f"base {p}" for p in BASE_PLATFORMS),
        "workers",
    ]
    assert all(s.ok for s in states), states
    engine = states[0].detail
    assert "Docker Engine" in engine
    assert local_services.docker_host(services) in engine


def test_docker_host_answers_and_gpu_runtime_is_a_yes_or_no(services):
    host = local_services.docker_host(services)
    assert host.startswith(("unix://", "tcp://", "ssh://"))
    assert local_services.gpu_runtime_available(host) in (True, False)


def test_second_registry_up_and_down_by_pid(services, tmp_path, monkeypatch):
    # A second data dir with its own registry on a free port, sharing the running engine: `up`
    # starts only that registry and pushes the same base digests; `down` stops only it.
    monkeypatch.setenv("DOCKER_HOST", local_services.docker_host(services))
    other = Settings(
        manifest_store=services.manifest_store,
        data_dir=tmp_path / "factory",
        registry=f"127.0.0.1:{_free_port()}",
    )
    # Reuse the packages the session already fetched: no network needed.
    for deb in (services.data_dir / "base").glob("*/*.deb"):
        target = other.data_dir / "base" / deb.parent.name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(deb, target / deb.name)

    states = {s.name: s for s in local_services.up(other, echo=lambda _: None)}
    assert states["registry"].changed
    assert not states["engine"].changed
    started = _started(other)
    assert set(started) == {"registry"}
    pid = started["registry"]["pid"]
    assert Path(f"/proc/{pid}").exists()

    main_index = RegistryClient(services.registry).head_digest(BASE_REPOSITORY, BASE_TAG)
    assert RegistryClient(other.registry).head_digest(BASE_REPOSITORY, BASE_TAG) == main_index

    stopped = {s.name: s for s in local_services.down(other, echo=lambda _: None)}
    assert stopped["registry"].changed
    assert "not started by factory" in stopped["engine"].detail
    assert _started(other) == {}
    assert not Path(f"/proc/{pid}").exists()
    # Data stays in place; the session's own services still answer.
    assert (other.data_dir / "registry" / "data" / "docker").is_dir()
    assert all(s.ok for s in local_services.status(services))
