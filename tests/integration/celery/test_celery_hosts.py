"""Celery mode on several "hosts": real broker, PostgreSQL, moto S3, registry, qemu, engines.

Each host is its own dockerd (`factory.services.extra_engine`) and each worker a real `factory
worker` subprocess with its own data dir and DAGSTER_HOME (PostgreSQL, deploy/dagster.yaml's
storage). The broker is Redis, started by the project's own code
(`factory.services.local_broker.broker_up`) on a free loopback port, and stopped by its recorded
PID. Workers share only a registry of their own (started for the module), PostgreSQL and the S3
bucket. The slow set-up is done once for the module; the tests run in file order:

1. the example matrix: amd64 steps run on worker A (engine A), arm64 ones on worker B (engine B);
2. a third amd64 worker on an empty engine C rebuilds every amd64 image from the registry cache;
3. the amd64 worker running a build is SIGKILLed (process group); another amd64 worker finishes
   it, and the combination has exactly one record;
4. a worker with --max-idle 10 exits by itself, and `factory status` stops listing it.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.isolated import temp_registry
from factory.records.model import CompatibilityRecord
from factory.records.s3_store import S3RecordStore
from factory.services.extra_engine import start_extra_engine, stop_extra_engine
from factory.services.local_broker import broker_up
from factory.services.processes import is_running, read_state, stop
from factory.services.state import ServicePaths
from factory.workers.celery_inspect import ask_workers
from tests.integration.postgres_server import postgres_server, write_production_instance
from tests.integration.s3_server import moto_server
from tests.integration.stores import EXAMPLE, example_store_copy, manifest

pytestmark = pytest.mark.integration

FACTORY = str(Path(sys.executable).with_name("factory"))
PREFIX = "factory"
EXAMPLE_MANIFESTS = tuple(json.loads((EXAMPLE / "manifest.json").read_text())["manifests"])
SLOW_ID = "celery_kill_probe"
SLOW_MODULE = "slowprobe"
READY_TIMEOUT_S = 90
RUN_TIMEOUT_S = 600
# Short, so a killed worker's task comes back in seconds (healthy workers renew their lease).
VISIBILITY_TIMEOUT_S = 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Worker:
    name: str
    pool: str
    docker_host: str
    process: subprocess.Popen
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop this worker's process group (the worker and its pool children) by its PID."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        # Pool children that outlived a SIGKILLed parent are in the same group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    broker: str
    project_docker_host: str
    store: Path
    s3: object
    bucket: str
    pg_env: dict[str, str]
    engines: dict[str, object] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)

    def home(self, name: str) -> Path:
        home = self.root / name / "dagster"
        if not (home / "dagster.yaml").exists():
            write_production_instance(home)
        return home

    def engine(self, name: str) -> str:
        if name not in self.engines:
            folder = Path(tempfile.mkdtemp(prefix=f"fx{name}-"))
            self.folders.append(folder)
            self.engines[name] = start_extra_engine(folder)
        return self.engines[name].docker_host

    def start_worker(
        self, name: str, pool: str, engine: str, *extra: str, wait: bool = True
    ) -> Worker:
        """`factory worker` with its own engine, data dir and DAGSTER_HOME; waits until ready."""
        docker_host = self.engine(engine)
        folder = self.root / name
        env = {
            **self.env,
            "DAGSTER_HOME": str(self.home(name)),
            "FACTORY_DATA_DIR": str(folder / "data"),
            "DOCKER_HOST": docker_host,
        }
        log = folder / "worker.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    FACTORY,
                    "worker",
                    "--pool",
                    pool,
                    "--docker-host",
                    docker_host,
                    "--data-dir",
                    str(folder / "data"),
                    "--name",
                    name,
                    *extra,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        worker = Worker(name, pool, docker_host, process, log)
        self.workers.append(worker)
        if wait:
            self.wait_ready(worker)
        return worker

    def wait_ready(self, worker: Worker) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert worker.process.poll() is None, worker.log.read_text()[-3000:]
            if any(w["name"].startswith(f"{worker.name}@") for w in ask_workers(self.broker)):
                return
            time.sleep(0.5)
        pytest.fail(f"worker {worker.name} not ready:\n{worker.log.read_text()[-3000:]}")

    def alive(self) -> dict[str, dict]:
        return {w["name"].partition("@")[0]: w for w in ask_workers(self.broker)}

    def factory(self, *args: str, **popen) -> subprocess.Popen:
        """A `factory` command as the run coordinator (the broker host) runs it."""
        env = {
            **self.env,
            "DAGSTER_HOME": str(self.home("coordinator")),
            "FACTORY_DATA_DIR": str(self.root / "coordinator" / "data"),
            "DOCKER_HOST": self.project_docker_host,
            "FACTORY_EXECUTOR": "celery",
        }
        return subprocess.Popen(
            [FACTORY, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **popen,
        )

    def run(self, *args: str, timeout: float = RUN_TIMEOUT_S) -> tuple[int, str]:
        proc = self.factory(*args)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail(f"factory {' '.join(args)} timed out:\n{out}\n{self.worker_logs()}")
        return proc.returncode, out

    def worker_logs(self) -> str:
        return "\n".join(
            f"--- {w.name}\n{w.log.read_text(errors='replace')[-2500:]}" for w in self.workers
        )

    def records(self) -> list[CompatibilityRecord]:
        store = S3RecordStore(self.s3.client(), self.bucket, PREFIX)
        return list(store.records())


@pytest.fixture(scope="module")
def cluster(services, tmp_path_factory) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="fxcel-"))
    broker_dir = root / "broker"
    paths = ServicePaths(broker_dir)
    port = _free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    broker_up(paths, lambda _line: None, url=broker)
    store = example_store_copy(
        root,
        None,
        modules={SLOW_MODULE: {"0.1.0": {"path": f"modules/{SLOW_MODULE}/0.1.0.Dockerfile"}}},
        files={
            # A build long enough to kill a worker in the middle of it; new content each session,
            # so no cache or registry image short-cuts it.
            f"modules/{SLOW_MODULE}/0.1.0.Dockerfile": (
                f"RUN sleep 25 && echo {uuid.uuid4().hex} > /kill-probe\n"
            ),
        },
    )
    data = json.loads(store.read_text())
    data["manifests"][SLOW_ID] = manifest(
        fragments={"security": "0.1.0", "core": "0.1.0", SLOW_MODULE: "0.1.0"}
    )
    store.write_text(json.dumps(data, indent=2))
    try:
        with (
            postgres_server() as pg,
            moto_server(tmp_path_factory.mktemp("moto-celery")) as s3,
            # The hosts' own registry (the base still comes from the project's): every image and
            # cache ref in it was built by these hosts. A cache ref that another engine's build
            # imported from a third engine's ref can lack layers in Docker 20.10's inline cache
            # (docs/performance.md), and the shared registry holds refs from every other test.
            temp_registry(root / "registry") as registry,
        ):
            bucket = s3.new_bucket()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("FACTORY_", "DAGSTER"))}
            env.update(
                {
                    **pg.dagster_env(),
                    "FACTORY_REGISTRY": registry,
                    "FACTORY_MANIFEST_STORE": str(store),
                    "FACTORY_CELERY_BROKER": broker,
                    "FACTORY_CELERY_BACKEND": f"redis://127.0.0.1:{port}/1",
                    "FACTORY_CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S),
                    **s3.record_store_env(bucket, PREFIX),
                    "FACTORY_RETRY_DELAY_S": "1",
                }
            )
            cluster = Cluster(
                root=root,
                env=env,
                broker=broker,
                project_docker_host=os.environ.get("DOCKER_HOST")
                or ServicePaths(services.data_dir).docker_host,
                store=store,
                s3=s3,
                bucket=bucket,
                pg_env=pg.dagster_env(),
            )
            try:
                yield cluster
            finally:
                for worker in cluster.workers:
                    worker.stop()
                for engine in cluster.engines.values():
                    stop_extra_engine(engine)
                for folder in cluster.folders:
                    shutil.rmtree(folder, ignore_errors=True)
    finally:
        record = read_state(paths).get("redis")
        if record and is_running(record):
            stop(record)
        shutil.rmtree(root, ignore_errors=True)


def _by_combination(records, manifest_ids) -> dict[tuple[str, str], list[CompatibilityRecord]]:
    found: dict[tuple[str, str], list[CompatibilityRecord]] = {}
    for r in records:
        if r.manifest_id in manifest_ids:
            found.setdefault((r.manifest_id, r.platform), []).append(r)
    return found


def test_each_pool_runs_on_its_own_host(cluster):
    worker_a = cluster.start_worker("host-a", "amd64", "A")
    worker_b = cluster.start_worker("host-b", "arm64", "B")
    ids = [arg for mid in EXAMPLE_MANIFESTS for arg in ("--manifest-id", mid)]
    code, out = cluster.run("run", "--parallel", "3", *ids)
    assert code == 0, f"{out}\n{cluster.worker_logs()}"

    # Each worker reports the engine it checked at start-up. Docker 20.10 takes the engine ID from
    # /etc/docker/key.json, which every dockerd on one machine shares, so here the engines are
    # told apart by their addresses; on separate hosts the IDs differ too.
    engine_ids = {}
    for name, worker in (("A", worker_a), ("B", worker_b)):
        engine_ids[name] = cluster.alive()[worker.name]["engine_id"]
        assert engine_ids[name]
    assert worker_a.docker_host != worker_b.docker_host

    combos = _by_combination(cluster.records(), EXAMPLE_MANIFESTS)
    example = json.loads((EXAMPLE / "manifest.json").read_text())["manifests"]
    expected = {
        (mid, p) for mid, m in example.items() for p in m["platforms"] if p != "linux/amd64+gpu"
    }
    assert set(combos) == expected, out
    for (mid, platform), found in combos.items():
        assert len(found) == 1, (mid, platform, [r.build_id for r in found])
        record = found[0]
        executor = record.executor
        assert executor is not None and executor.kind == "celery"
        if platform == "linux/amd64":
            assert (executor.worker, executor.engine_id) == (
                f"{worker_a.name}@{executor.host}",
                engine_ids["A"],
            )
            assert executor.docker_host == worker_a.docker_host
        else:
            assert (executor.worker, executor.engine_id) == (
                f"{worker_b.name}@{executor.host}",
                engine_ids["B"],
            )
            assert executor.docker_host == worker_b.docker_host
        assert executor.pool == ("amd64" if platform == "linux/amd64" else "arm64")
        want = "fail" if (mid, platform) == ("legacy_agent", "linux/arm64") else "pass"
        assert record.status == want, (mid, platform, record.error)
        # The evidence log names the executor too.
        evidence = S3RecordStore(cluster.s3.client(), cluster.bucket, PREFIX).get(
            "evidence", record.build_id
        )
        assert evidence is not None and executor.worker in evidence.decode(errors="replace")

    code, text = cluster.run("matrix", "--format", "json")
    assert code == 0, text
    cells = {
        (c["manifest_id"], c["platform"]): c["status"]
        for c in json.loads(text)["cells"]
        if c["manifest_id"] in EXAMPLE_MANIFESTS
    }
    for key in expected:
        want = "fail" if key == ("legacy_agent", "linux/arm64") else "pass"
        assert cells[key] == want, (key, cells)
    assert cells[("llm_factory", "linux/amd64+gpu")] == "not run"


def test_fresh_host_builds_from_the_registry_cache(cluster):
    ids = [arg for mid in EXAMPLE_MANIFESTS for arg in ("--manifest-id", mid)]
    # Host A builds again (forced) and pushes the cache refs, from the layers it built above.
    code, out = cluster.run("run", "--force", "--platform", "linux/amd64", *ids)
    assert code == 0, f"{out}\n{cluster.worker_logs()}"
    [worker_a] = [w for w in cluster.workers if w.name == "host-a"]
    assert worker_a.stop() == 0  # warm shutdown
    assert worker_a.name not in cluster.alive()

    worker_c = cluster.start_worker("host-c", "amd64", "C")
    started = time.time()
    code, out = cluster.run("run", "--force", "--platform", "linux/amd64", *ids)
    assert code == 0, f"{out}\n{cluster.worker_logs()}"
    engine_c = cluster.alive()[worker_c.name]["engine_id"]
    newest = {}
    for r in cluster.records():
        if r.platform == "linux/amd64" and r.manifest_id in EXAMPLE_MANIFESTS:
            if r.manifest_id not in newest or r.finished_at > newest[r.manifest_id].finished_at:
                newest[r.manifest_id] = r
    assert set(newest) == {
        mid
        for mid, m in json.loads((EXAMPLE / "manifest.json").read_text())["manifests"].items()
        if "linux/amd64" in m["platforms"]
    }
    for mid, record in newest.items():
        assert record.executor is not None and record.executor.engine_id == engine_c, mid
        assert record.executor.worker.startswith(f"{worker_c.name}@")
        assert record.status == "pass", (mid, record.error)
        assert record.image is not None and record.image.rebuilt, mid
        # Every step came from the registry cache on an engine that never built anything, except
        # the FROM step, which BuildKit counts as a step and which is a pull on a fresh engine.
        assert record.cache.steps > 1 and record.cache.cached == record.cache.steps - 1, (
            mid,
            record.cache,
        )
    assert time.time() - started < RUN_TIMEOUT_S


def test_killed_worker_task_goes_to_another_worker_of_the_pool(cluster):
    # host-c (amd64, engine C) is still up; a second amd64 worker on engine A joins it.
    cluster.start_worker("host-a2", "amd64", "A")
    run = cluster.factory("run", "--manifest-id", SLOW_ID, "--platform", "linux/amd64")
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        victim = None
        while victim is None:
            assert time.monotonic() < deadline, cluster.worker_logs()
            busy = [n for n, w in cluster.alive().items() if w["busy"] and w["pool"] == "amd64"]
            victim = busy[0] if busy else None
            time.sleep(0.5)
        # Mid-build: the RUN step sleeps 25 s.
        time.sleep(6)
        [worker] = [w for w in cluster.workers if w.name == victim and w.process.poll() is None]
        worker.stop(signal.SIGKILL)
        survivor = "host-c" if victim == "host-a2" else "host-a2"
        out, _ = run.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, f"{out}\n{cluster.worker_logs()}"
    found = [r for r in cluster.records() if r.manifest_id == SLOW_ID]
    assert len(found) == 1, [(r.build_id, r.executor) for r in found]
    [record] = found
    assert record.status == "pass", record.error
    assert record.executor is not None and record.executor.worker.startswith(f"{survivor}@")
    assert victim not in cluster.alive()


def test_idle_worker_exits_and_leaves_status(cluster):
    worker = cluster.start_worker("idler", "arm64", "B", "--max-idle", "10")
    ready = time.monotonic()
    try:
        code = worker.process.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"idle worker still running:\n{worker.log.read_text()[-2000:]}")
    elapsed = time.monotonic() - ready
    assert code == 0, worker.log.read_text()[-2000:]
    assert 8 <= elapsed < 30, elapsed
    assert "idle for 10 s" in worker.log.read_text()
    code, text = cluster.run("status", "--json")
    assert code == 0, text
    report = json.loads(text)
    names = [w["name"] for ws in report["workers"]["pools"].values() for w in ws]
    assert not any(n.startswith("idler@") for n in names), names
    assert any(n.startswith("host-b@") for n in names), names
