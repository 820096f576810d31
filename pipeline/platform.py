"""The host's Swarm plumbing: swarm mode, the edge network, and the Traefik edge stack.

Each `ensure_*` call is idempotent: it inspects first and changes only what is missing.
"""

from __future__ import annotations

import logging

import docker
import docker.errors

from pipeline import engine
from pipeline.core.config import Platform
from pipeline.core.render import render_edge
from pipeline.errors import NepheliosError

log = logging.getLogger(__name__)

EDGE_STACK = "nephelios"


class EngineUnavailable(NepheliosError):
    pass


def connect() -> docker.DockerClient:
    try:
        client = engine.client()
        client.ping()
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(
            f"cannot reach the Docker engine (is dockerd running? DOCKER_HOST?): {exc}"
        ) from exc
    return client


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
