"""The resident worker server (factory/workers/resident.py): real server processes, started and
stopped by PID in a folder of each test's own; no engine needed."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from factory.settings import PROJECT_ROOT
from factory.workers import resident
from tests.process_tree import alive

# A command that asks the resident server for one worker and prints what the worker sees.
CLIENT = textwrap.dedent(
    """
    import os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from factory.workers.resident import ensure_server, resident_context

    def main():
        context = resident_context(ensure_server())
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            print("env", pool.submit(os.getenv, "FACTORY_TEST_MARK").result(timeout=120))
            print("cwd", pool.submit(os.getcwd).result())
            print("parent", pool.submit(os.getppid).result())
            print("umask", oct(pool.submit(os.umask, 0).result()))
            pool.submit(os.write, 1, b"written by the worker\\n").result()
            sys.stdout.flush()
            if len(sys.argv) > 1:
                print("worker", pool.submit(os.getpid).result(), flush=True)
                pool.submit(time.sleep, float(sys.argv[1])).result()

    if __name__ == "__main__":
        os.umask(0o027)
        main()
    """
)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A worker folder of this test's own, its servers stopped at the end."""
    path = tmp_path / "workers"
    monkeypatch.setenv(resident.DIR_ENV, str(path))
    monkeypatch.delenv(resident.IDLE_ENV, raising=False)
    yield path
    resident.stop_servers({resident.DIR_ENV: str(path)})


def _client(tmp_path: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


def _seen(output: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in output.splitlines() if " " in line)


def _server_pid(folder: Path) -> int:
    [record] = resident.running_servers({resident.DIR_ENV: str(folder)})
    return record["pid"]


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_workers_take_each_command_s_environment_folder_umask_and_output(folder, tmp_path):
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    first = _client(tmp_path, first_dir, FACTORY_TEST_MARK="first")
    server = _server_pid(folder)
    second = _client(tmp_path, second_dir, FACTORY_TEST_MARK="second")
    seen_first, seen_second = _seen(first.stdout), _seen(second.stdout)
    assert seen_first["env"] == "first"
    assert seen_second["env"] == "second"
    assert seen_first["cwd"] == str(first_dir)
    assert seen_second["cwd"] == str(second_dir)
    assert seen_first["umask"] == seen_second["umask"] == "0o27"
    # One server forked both commands' workers, and each worker wrote to its command's output.
    assert int(seen_first["parent"]) == int(seen_second["parent"]) == server
    assert "written by the worker" in first.stdout
    assert "written by the worker" in second.stdout


def test_the_preload_covers_every_third_party_module_a_worker_imports(tmp_path):
    """After PRELOAD, loading the code location, opening an instance and importing the matrix
    asset import no other third-party module: a worker imports only the project's own."""
    check = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        from factory.workers.resident import PRELOAD
        for name in PRELOAD:
            __import__(name)
        PROJECT = {"factory", "factory_assets", "resources", "sensors", "tests"}
        def third_party():
            return {n for n in sys.modules if n.split(".")[0] not in PROJECT
                    and n.split(".")[0] not in sys.stdlib_module_names and not n.startswith("_")}
        before = third_party()
        from factory.services.dagster_home import write_instance_config
        write_instance_config(Path(os.environ["DAGSTER_HOME"]))
        from factory_assets import launcher
        launcher.start_worker()
        import factory_assets.matrix
        print(sorted(third_party() - before))
        """
    )
    home = tmp_path / "dagster"
    home.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", check],
        cwd=tmp_path,
        env={**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_an_unused_server_leaves_and_the_next_command_starts_another(folder, tmp_path):
    _client(tmp_path, tmp_path, **{resident.IDLE_ENV: "1"})
    server = _server_pid(folder)
    assert _gone_within(server, 30), "the idle server did not leave"
    assert not list(folder.glob("*.sock")), "the idle server left its socket"
    assert not list(folder.glob("*.json")), "the idle server left its record"
    _client(tmp_path, tmp_path, **{resident.IDLE_ENV: "1"})
    assert _server_pid(folder) != server


def test_a_killed_server_is_replaced(folder, tmp_path):
    _client(tmp_path, tmp_path)
    server = _server_pid(folder)
    os.kill(server, signal.SIGKILL)  # started by this test
    assert _gone_within(server, 10)
    again = _client(tmp_path, tmp_path, FACTORY_TEST_MARK="again")
    assert _seen(again.stdout)["env"] == "again"
    assert _server_pid(folder) != server


def test_a_worker_ends_with_the_command_that_asked_for_it(folder, tmp_path):
    """The server is not the worker's command: a command killed in the middle of a task (here a
    60 s sleep) does not leave its worker running."""
    script = tmp_path / "client.py"
    # The pool as `factory run` makes it: with the resident worker's initializer.
    script.write_text(
        CLIENT.replace(
            "ProcessPoolExecutor(1, mp_context=context)",
            "ProcessPoolExecutor(1, mp_context=context, initializer=_start_resident_worker)",
        ).replace(
            "from factory.workers.resident import ensure_server, resident_context",
            "from factory.workers.resident import ensure_server, resident_context\n"
            "from factory.workers.run_pool import _start_resident_worker",
        )
    )
    client = subprocess.Popen(
        [sys.executable, str(script), "60"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        worker = None
        for line in client.stdout:
            if line.startswith("worker "):
                worker = int(line.split()[1])
                break
        assert worker is not None and alive(worker)
        client.kill()
        client.wait()
        assert _gone_within(worker, 15), "the worker outlived its command"
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        client.stdout.close()
    assert alive(_server_pid(folder)), "the server went with the command"


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: p.mkdir(mode=0o777) or p.chmod(0o777), "open to other users (mode 777)"),
        (lambda p: p.symlink_to(p.parent), "is not a folder (a link?)"),
        (lambda p: p.mkdir(mode=0o700) or os.chown(p, 65534, 65534), "belongs to uid 65534"),
        (lambda p: p.write_text("x"), "is not a folder"),
    ],
    ids=["open-to-others", "symlink", "another-user", "a-file"],
)
def test_a_folder_another_user_could_use_is_refused(tmp_path, make, said):
    path = tmp_path / "workers"
    make(path)
    with pytest.raises(resident.ResidentUnavailable, match=re.escape(said)):
        resident.ensure_server({resident.DIR_ENV: str(path)})


def test_without_a_usable_folder_the_command_starts_its_own_workers(tmp_path, monkeypatch, capfd):
    from factory.workers import run_pool

    path = tmp_path / "open"
    path.mkdir()
    path.chmod(0o777)
    monkeypatch.setenv(resident.DIR_ENV, str(path))
    monkeypatch.setattr(run_pool, "PRELOAD", ())
    monkeypatch.setattr(run_pool, "_WARNED", set())
    for _ in range(2):
        with run_pool.Workers(1) as workers:
            assert workers.pool.submit(os.getpid).result(timeout=120) != os.getpid()
    err = capfd.readouterr().err
    assert err.count("warning: the workers start with this command: FACTORY_WORKER_DIR") == 1, err
    assert "open to other users" in err
    assert not list(path.iterdir())


def test_idle_zero_means_no_resident_server(tmp_path, monkeypatch, capfd):
    from factory.workers import run_pool

    monkeypatch.setenv(resident.DIR_ENV, str(tmp_path / "workers"))
    monkeypatch.setenv(resident.IDLE_ENV, "0")
    monkeypatch.setattr(run_pool, "PRELOAD", ())
    with run_pool.Workers(1) as workers:
        assert workers.pool.submit(os.getpid).result(timeout=120) != os.getpid()
    assert not (tmp_path / "workers").exists()
    assert "warning" not in capfd.readouterr().err


@pytest.mark.parametrize("value", ["-1", "soon", "1e9", "nan"])
def test_a_bad_idle_setting_is_named(value):
    with pytest.raises(Exception, match=resident.IDLE_ENV):
        resident.idle_seconds({resident.IDLE_ENV: value})


def test_the_key_follows_what_third_party_modules_read_at_import():
    base = {"PATH": "/usr/bin", "DAGSTER_HOME": "/a", "FACTORY_REGISTRY": "r:1"}
    key = resident.server_key(base)
    # Read by the workers after the fork, from the command's own environment: same server.
    assert resident.server_key({**base, "DAGSTER_HOME": "/b", "FACTORY_REGISTRY": "r:2"}) == key
    for name in ("DAGSTER_CLI_API_GRPC_PORT", "PYTHONHASHSEED", "FSSPEC_CONFIG_DIR"):
        assert resident.server_key({**base, name: "1"}) != key, name


def test_stop_servers_leaves_the_ones_it_is_told_to_keep(folder, tmp_path):
    _client(tmp_path, tmp_path)
    server = _server_pid(folder)
    environ = {resident.DIR_ENV: str(folder)}
    assert resident.stop_servers(environ, keep={server}) == []
    assert alive(server)
    [line] = resident.stop_servers(environ)
    assert f"pid {server}" in line
    assert _gone_within(server, 5)
    assert not list(folder.glob("*.sock")) and not list(folder.glob("*.json"))


def test_a_server_that_left_after_the_command_found_it_is_replaced(folder, tmp_path):
    """Between finding the server and asking it for a worker, the server may leave (idle, or
    stopped): the request goes to a new one instead of failing the command."""
    from concurrent.futures import ProcessPoolExecutor

    address = resident.ensure_server()
    server = _server_pid(folder)
    os.kill(server, signal.SIGKILL)  # started by this test
    assert _gone_within(server, 10)
    with ProcessPoolExecutor(1, mp_context=resident.resident_context(address)) as pool:
        assert pool.submit(os.getpid).result(timeout=120) != os.getpid()
    assert _server_pid(folder) != server


def test_a_bad_idle_setting_stops_factory_run_with_one_line(tmp_path):
    done = subprocess.run(
        [str(Path(sys.executable).parent / "factory"), "run"],
        cwd=tmp_path,
        env={**os.environ, resident.IDLE_ENV: "soon", "FACTORY_DATA_DIR": str(tmp_path / "d")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"Error: {resident.IDLE_ENV}=soon is not" in done.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "record",
    [
        "not json",
        "[1, 2]",
        '{"pid": "1"}',
        '{"pid": 1, "start_time": 0, "argv": ["init"], "socket_inode": 0}',  # someone else's PID
        '{"pid": 1}',
    ],
    ids=["not-json", "not-a-mapping", "pid-not-a-number", "another-process", "no-start-time"],
)
def test_a_hostile_record_neither_stops_a_stranger_nor_blocks_a_new_server(folder, record):
    """A record in the worker folder is trusted for nothing: PID 1 is not stopped, and the next
    command starts a server of its own in place of the one the record claims."""
    folder.mkdir(mode=0o700)
    key = resident.server_key()
    (folder / f"{key}.json").write_text(record)
    environ = {resident.DIR_ENV: str(folder)}
    assert resident.stop_servers(environ) == []
    assert alive(1)
    (folder / f"{key}.json").write_text(record)
    resident.ensure_server()
    [running] = resident.running_servers(environ)
    assert running["pid"] != 1


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ("/nonexistent-parent/workers", "cannot be made: No such file or directory"),
        ("/tmp/\x1b[2Jworkers/\x00x", "cannot be made"),
        ("/tmp/" + "w" * 120, "too long for a socket"),
    ],
    ids=["missing-parent", "control-characters", "too-long"],
)
def test_a_worker_folder_that_cannot_be_used_is_named_without_a_traceback(raw, said):
    with pytest.raises(resident.ResidentUnavailable, match=re.escape(said)) as caught:
        resident.ensure_server({resident.DIR_ENV: raw})
    assert "\x1b" not in str(caught.value)
