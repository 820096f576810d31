"""The host's Swarm plumbing: swarm mode, the edge network, and the Traefik edge stack.

Each `ensure_*` call is idempotent: it inspects first and changes only what is missing.
"""

from __future__ import annotations

import logging
import os
import re

import docker
import docker.errors

from pipeline import engine
from pipeline.core.config import Platform
from pipeline.core.render import render_edge
from pipeline.errors import NepheliosError

log = logging.getLogger(__name__)

EDGE_STACK = "nephelios"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


class EngineUnavailable(NepheliosError):
    pass


def connect() -> docker.DockerClient:
    """A client whose engine answered a ping; EngineUnavailable says what is wrong if not."""
    host = os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    socket_path = host.removeprefix("unix://") if host.startswith("unix://") else None
    if socket_path is not None and not os.path.exists(socket_path):
        raise EngineUnavailable(
            f"no Docker engine: {socket_path} does not exist "
            "(install Docker, e.g. apt-get install docker.io, and start dockerd)"
        )
    try:
        client = engine.client()
        client.ping()
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(
            f"the Docker engine at {host} does not answer (is dockerd running?): {_cause(exc)}"
        ) from exc
    return client


def _cause(exc: Exception) -> str:
    """The root cause of a docker-py connection error, without its nested reprs."""
    errno = re.search(r"\[Errno -?\d+\] ([^\]\"')]+)", str(exc))
    if errno:
        return errno.group(1).strip()
    os_error = re.search(r"Error\(-?\d+, '([^']+)'\)", str(exc))
    if os_error:
        return os_error.group(1)
    if "Permission denied" in str(exc) or "PermissionError" in str(exc):
        return "permission denied (run as root or join the docker group)"
    return str(exc)[:200]


def ensure_swarm(client: docker.DockerClient, advertise_addr: str) -> bool:
    """Initialise swarm mode when inactive; True when this call did it."""
    state = client.info().get("Swarm", {}).get("LocalNodeState")
    if state == "active":
        return False
    client.swarm.init(advertise_addr=advertise_addr)
    return True


def ensure_network(client: docker.DockerClient, name: str) -> bool:
    if client.networks.list(names=[name]):
        return False
    client.networks.create(name, driver="overlay", attachable=True, scope="swarm")
    return True


def ensure_edge(platform: Platform, stack: str = EDGE_STACK) -> None:
    """Deploy (or update in place) the Traefik edge stack."""
    engine.stack_deploy(stack, render_edge(platform), registry_auth=False)
