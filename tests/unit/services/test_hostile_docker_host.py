"""A DOCKER_HOST that is not an engine's address: one message that shows it, escapes and all,
without obeying them (a terminal would clear its screen on `ESC[2J`)."""

import pytest

from factory.build.engine import Engine
from factory.errors import ServiceError
from factory.services.local_engine import answering_engine, gpu_runtime_available
from factory.services.state import ServicePaths

HOSTILE = "not an address \x1b[2J\x07"


def _check(message: str) -> None:
    assert "\x1b" not in message and "\x07" not in message
    assert "not an address" in message and "\\x1b[2J" in message


def test_the_environments_docker_host_that_does_not_answer(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix:///{tmp_path}/{HOSTILE}.sock")
    with pytest.raises(ServiceError) as caught:
        answering_engine(ServicePaths(tmp_path))
    _check(str(caught.value))


def test_the_gpu_check_on_a_host_that_is_no_address():
    with pytest.raises(ServiceError) as caught:
        gpu_runtime_available(HOSTILE)
    _check(str(caught.value))


def test_an_engine_at_a_host_that_is_no_address():
    with pytest.raises(ServiceError) as caught:
        _ = Engine(HOSTILE).client
    _check(str(caught.value))


@pytest.mark.parametrize("address", ["tcp://[::1", "http://[oops:2375", "unix://[ /x.sock"])
def test_an_address_urllib_cannot_parse_is_an_engine_that_does_not_answer(address):
    with pytest.raises(ServiceError, match="does not answer"):
        gpu_runtime_available(address)
    with pytest.raises(ServiceError, match="does not answer"):
        _ = Engine(address).client


def test_a_celery_workers_docker_host_that_is_no_address():
    from factory.errors import FactoryError
    from factory.workers.celery_worker import engine_id_or_error

    for address in (HOSTILE, "tcp://[::1"):
        with pytest.raises(FactoryError, match="does not answer") as caught:
            engine_id_or_error(address)
        assert "\x1b" not in str(caught.value)
