"""What every test session shares: the resident worker servers its commands start are its own.

`factory run` and `factory services up` start a resident worker server that outlives them
(factory/workers/resident.py). The session gives them a folder of its own, and stops the servers
recorded there at its end, by PID. A test that runs a command without FACTORY_WORKER_DIR in its
environment reaches the default folder: the servers recorded there during the session, and only
those, are stopped too.
"""

import os

import pytest

from factory.workers import resident


def _recorded(environ: dict) -> set[int]:
    return {record["pid"] for record in resident.running_servers(environ)}


@pytest.fixture(scope="session", autouse=True)
def resident_worker_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workers")
    folder.chmod(0o700)
    default = {k: v for k, v in os.environ.items() if k != resident.DIR_ENV}
    before = _recorded(default)
    previous = os.environ.get(resident.DIR_ENV)
    os.environ[resident.DIR_ENV] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop(resident.DIR_ENV, None)
        else:
            os.environ[resident.DIR_ENV] = previous
        resident.stop_servers({resident.DIR_ENV: str(folder)})
        resident.stop_servers(default, keep=before)
