"""An extra dockerd beside the project's: it builds, and leaves the host as it found it.

A second daemon with iptables on would flush the first one's chains, and a killed one leaves
mounts behind: both would break the project's engine for every later test.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from factory.build.engine import Engine
from factory.services.embedded import docker_host
from factory.services.extra_engine import mount_points_under, start_extra_engine, stop_extra_engine

pytestmark = pytest.mark.integration


def docker_chains() -> set[str]:
    """The Docker chains in the filter and nat tables (empty when iptables is not there)."""
    if shutil.which("iptables") is None:
        return set()
    chains = set()
    for table in ("filter", "nat"):
        listing = subprocess.run(
            ["iptables", "-t", table, "-S"], capture_output=True, text=True, check=False
        ).stdout
        chains |= {
            f"{table}:{line.split()[1]}"
            for line in listing.splitlines()
            if line.startswith("-N DOCKER")
        }
    return chains


def processes_naming(path: Path) -> list[int]:
    """PIDs whose command line names `path` (the engine's containerd lives under its exec root)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize("kill", [False, True], ids=["stopped", "killed"])
def test_extra_engine_builds_and_cleans_up(services, kill):
    chains = docker_chains()
    tmp = tempfile.mkdtemp(prefix="fx-")
    try:
        engine = start_extra_engine(tmp)
        try:
            # A RUN step needs the engine's default bridge network: here, a bridge of its own.
            result = Engine(engine.docker_host).build(
                dockerfile=f"FROM {services.registry}/factory/base/busybox:1.35\n"
                "RUN echo extra > /extra\n",
                image_ref="factory-extra-engine-test:latest",
                cache_ref="factory-extra-engine-test:cache",
                oci_platform="linux/amd64",
            )
            assert result.steps == 2
            assert Path(f"/sys/class/net/{engine.bridge}").exists()
            assert mount_points_under(engine.root)
            assert processes_naming(engine.root)
            if kill:
                # As if it had crashed: no clean shutdown, mounts left behind.
                os.kill(engine.pid, 9)
                engine.process.wait(10)
        finally:
            stop_extra_engine(engine)

        assert processes_naming(engine.root) == []
        assert mount_points_under(Path(tmp)) == []
        assert os.listdir(tmp) == []
        assert not Path(f"/sys/class/net/{engine.bridge}").exists()
        assert docker_chains() == chains
        Engine(docker_host(services)).client.ping()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
