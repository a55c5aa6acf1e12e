"""`factory gc --engine` on a real, fresh engine: the dry run lists, the real run frees that.

The engine is an extra dockerd of this test's own (the shared one holds other tests' images).
Four builds of one combination, the oldest image kept alive by a running container: with
`--keep 1` the two middle tags go, the newest and the running container's image stay, and the
build cache is pruned to FACTORY_ENGINE_CACHE_GB (0 here).
"""

import json
import shutil
import tempfile
import time
import uuid

import pytest
from click.testing import CliRunner

from factory.build.engine import Engine
from factory.cli.gc import gc_command
from factory.services.extra_engine import extra_engine

pytestmark = pytest.mark.integration


@pytest.fixture
def engine():
    tmp = tempfile.mkdtemp(prefix="fx-")
    try:
        with extra_engine(tmp) as host:
            yield Engine(host)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_engine_gc_dry_run_lists_and_the_real_run_frees_it(services, engine):
    manifest_id = f"prune-{uuid.uuid4().hex[:8]}"
    base = f"{services.registry}/factory/base/busybox:1.35"
    cache_ref = f"{services.registry}/factory/{manifest_id}-cache:linux_amd64"
    refs = []
    for n in range(4):
        ref = f"{services.registry}/factory/{manifest_id}:linux_amd64-{uuid.uuid4().hex[:12]}"
        engine.build(
            dockerfile=f"FROM {base}\nRUN head -c 20000 /dev/urandom > /payload-{n}\n",
            image_ref=ref,
            cache_ref=cache_ref,
            oci_platform="linux/amd64",
        )
        refs.append(ref)
        time.sleep(1.1)  # image creation times are whole seconds
    oldest, middle, newest = refs[0], refs[1:3], refs[3]
    running = engine.client.containers.run(oldest, ["sleep", "300"], detach=True)
    env = {
        "DOCKER_HOST": engine.docker_host,
        "FACTORY_REGISTRY": services.registry,
        "FACTORY_ENGINE_CACHE_GB": "0",
    }
    runner = CliRunner()
    try:
        cache_before = sum(c["Size"] for c in engine.client.df()["BuildCache"] or [])
        assert cache_before > 0

        dry = runner.invoke(gc_command, ["--engine", "--dry-run", "--keep", "1", "--json"], env=env)
        assert dry.exit_code == 0, dry.output
        plan = json.loads(dry.output)["plan"]
        assert sorted(r["ref"] for r in plan["removals"]) == sorted(middle)
        assert all(r["frees_bytes"] >= 20000 for r in plan["removals"])
        [kept] = plan["kept"]
        assert kept["ref"] == oldest and "running container" in kept["reason"]
        assert plan["cache_bytes"] == cache_before and plan["cache_limit_bytes"] == 0
        tags = {t for image in engine.client.images.list() for t in image.tags}
        assert set(refs) <= tags  # the dry run removed nothing

        text = runner.invoke(gc_command, ["--engine", "--dry-run", "--keep", "1"], env=env)
        assert text.exit_code == 0, text.output
        for ref in middle:
            assert f"remove {ref} ({manifest_id} linux_amd64" in text.output
        assert f"keep   {oldest} (used by running container" in text.output

        real = runner.invoke(gc_command, ["--engine", "--keep", "1", "--json"], env=env)
        assert real.exit_code == 0, real.output
        result = json.loads(real.output)["result"]
        assert sorted(result["removed"]) == sorted(middle) and result["failed"] == []
        assert result["image_bytes_freed"] >= sum(r["frees_bytes"] for r in plan["removals"])
        tags = {t for image in engine.client.images.list() for t in image.tags}
        assert not tags & set(middle)
        assert {oldest, newest, cache_ref} <= tags
        left = engine.client.df()["BuildCache"] or []
        assert sum(c["Size"] for c in left if not c["InUse"]) == 0
        assert result["cache_bytes_reclaimed"] > 0

        again = runner.invoke(
            gc_command, ["--engine", "--dry-run", "--keep", "1", "--json"], env=env
        )
        assert json.loads(again.output)["plan"]["removals"] == []
    finally:
        running.remove(force=True)
