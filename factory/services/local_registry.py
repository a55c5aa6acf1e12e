"""The registry images are pushed to: used where it answers, else Debian's docker-registry.

Factory starts a registry only on a loopback address, with its storage under the data dir and
deletes enabled (the gc deletes old image manifests by digest). Something that answers on the
port but not as a v2 registry is an error, not a registry to start next to.
"""

import json
import secrets

from factory.errors import RegistryError, ServiceError
from factory.registry.client import RegistryClient
from factory.registry.names import is_loopback
from factory.services.host_commands import ensure_installed
from factory.services.processes import is_running, read_state, refuse_if_running, start_service
from factory.services.state import Echo, ServicePaths, ServiceState
from factory.settings import Settings

# Timeouts, in seconds.
REGISTRY_PING_TIMEOUT_S = 3.0
REGISTRY_START_TIMEOUT_S = 20.0


def _registry_answers(client: RegistryClient) -> bool:
    try:
        client.ping()
    except ServiceError:
        return False
    except RegistryError as exc:
        msg = (
            f"something answers at {client.address} but not as a v2 registry ({exc}): "
            "free the port or point FACTORY_REGISTRY at a registry"
        )
        raise ServiceError(msg) from exc
    return True


def registry_detail(settings: Settings, started: dict) -> str:
    record = started.get("registry")
    whose = ""
    if record and is_running(record):
        whose = f", started by factory (pid {record['pid']}, log {record['log']})"
    return f"registry at {settings.registry}{whose}"


def registry_up(settings: Settings, paths: ServicePaths, echo: Echo) -> ServiceState:
    client = RegistryClient(settings.registry, timeout=REGISTRY_PING_TIMEOUT_S)
    started = read_state(paths)
    if _registry_answers(client):
        detail = registry_detail(settings, started)
        echo(f"registry: using {detail}")
        return ServiceState("registry", True, detail)
    if not is_loopback(client.address):
        msg = (
            f"registry {settings.registry} does not answer, and Factory only starts a registry "
            "on a loopback address: start yours, or unset FACTORY_REGISTRY to use 127.0.0.1:5000"
        )
        raise ServiceError(msg)
    refuse_if_running(started, "registry", settings.registry)
    installed = ensure_installed({"docker-registry": "docker-registry"}, echo)
    if installed and _registry_answers(client):
        detail = f"registry at {settings.registry} (started by the docker-registry package)"
        echo(f"registry: using {detail}")
        return ServiceState("registry", True, detail, changed=True)

    config = paths.registry_dir / "config.yml"
    storage = paths.registry_dir / "data"
    storage.mkdir(parents=True, exist_ok=True)
    listen = client.address.replace("localhost", "127.0.0.1", 1)
    # YAML is a superset of JSON: write the config as JSON, no YAML library needed.
    registry_config = {
        "version": "0.1",
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            # Factory's gc deletes old image manifests by digest.
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": listen,
            # Signs upload state; without one the registry makes one up and warns at each start.
            "secret": secrets.token_hex(16),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    config.write_text(json.dumps(registry_config, indent=2) + "\n")
    log = paths.registry_dir / "registry.log"
    echo(f"registry: starting docker-registry on {listen} (log: {log})")
    record, elapsed = start_service(
        paths,
        "registry",
        ["docker-registry", "serve", str(config)],
        log,
        ready=lambda: _registry_answers(client),
        timeout=REGISTRY_START_TIMEOUT_S,
    )
    echo(f"registry: ready in {elapsed:.1f} s (pid {record['pid']})")
    detail = registry_detail(settings, read_state(paths))
    return ServiceState("registry", True, detail, changed=True)
