"""Docker objects an app owns beside its stack: secrets (versioned) and named volumes.

A secret NAME of app APP is stored as a Docker secret labelled `nephelios.app=APP` and
`nephelios.secret=NAME`, whose name ends with a keyed hash of the value. Setting a new value
makes a new Docker secret (Docker secrets cannot change), so the next stack file names a
different secret and Swarm rolls the services out; setting the same value again changes
nothing. The key (`secret_key`, from the state directory) keeps the name from revealing a
weak value to whoever can list secrets. Values are only ever passed to the engine: never
logged, returned, or written to Redis or a stack file.

Volumes come from the stack file (`<app>_<name>`); `docker stack rm` leaves them, and
`remove_volumes` removes them when the user asks.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

import docker
import docker.errors

from pipeline.errors import NepheliosError

log = logging.getLogger(__name__)

APP_LABEL = "nephelios.app"
SECRET_LABEL = "nephelios.secret"  # noqa: S105 - a label name, not a value
VERSION_CHARS = 12
DOCKER_NAME_MAX = 64


def secret_docker_name(app: str, name: str, value: bytes, key: bytes) -> str:
    digest = hmac.new(key, b"\0".join([app.encode(), name.encode(), value]), hashlib.sha256)
    version = digest.hexdigest()[:VERSION_CHARS]
    full = f"{app}_{name}_{version}"
    # Docker caps secret names at 64; the labels still say which secret this is.
    return full if len(full) <= DOCKER_NAME_MAX else f"{app}_{version}"


def set_secret(
    client: docker.DockerClient, app: str, name: str, value: bytes, key: bytes
) -> tuple[str, bool]:
    """Store `value` as the newest version of the app's secret; (docker name, created)."""
    docker_name = secret_docker_name(app, name, value, key)
    # The engine's name filter matches prefixes; compare exactly.
    if any(s.name == docker_name for s in client.secrets.list(filters={"name": docker_name})):
        return docker_name, False
    client.secrets.create(name=docker_name, data=value, labels={APP_LABEL: app, SECRET_LABEL: name})
    log.info("%s: secret %s stored as %s", app, name, docker_name)
    return docker_name, True


def latest_secrets(client: docker.DockerClient, app: str) -> dict[str, str]:
    """NAME -> Docker name of the newest version of each of the app's secrets."""
    newest: dict[str, tuple[str, str]] = {}
    for secret in client.secrets.list(filters={"label": f"{APP_LABEL}={app}"}):
        name = secret.attrs.get("Spec", {}).get("Labels", {}).get(SECRET_LABEL)
        created = secret.attrs.get("CreatedAt", "")
        if name and (name not in newest or created > newest[name][0]):
            newest[name] = (created, secret.name)
    return {name: docker_name for name, (_, docker_name) in newest.items()}


def prune_secrets(client: docker.DockerClient, app: str, keep: set[str]) -> list[str]:
    """Remove the app's secret versions not in `keep`; one still in use stays for later."""
    removed = []
    for secret in client.secrets.list(filters={"label": f"{APP_LABEL}={app}"}):
        if secret.name in keep:
            continue
        try:
            secret.remove()
        except docker.errors.APIError as exc:
            # A rollback spec or a stopping task may still hold it; the next deploy retries.
            log.debug("%s: keeping secret %s: %s", app, secret.name, exc.explanation)
            continue
        removed.append(secret.name)
    return removed


class VolumesInUse(NepheliosError):
    pass


def remove_volumes(client: docker.DockerClient, app: str) -> list[str]:
    """Remove the named volumes of a removed app's stack; refuse while its services exist."""
    in_stack = {"label": f"com.docker.stack.namespace={app}"}
    if client.api.services(filters=in_stack):
        raise VolumesInUse(f"app {app} still has services; remove the app first")
    removed = []
    for volume in client.volumes.list(filters=in_stack):
        try:
            volume.remove()
        except docker.errors.APIError as exc:
            raise VolumesInUse(f"volume {volume.name}: {exc.explanation}") from exc
        removed.append(volume.name)
    return removed
