"""What the admin calls do to git, Swarm and the image store, thinly.

Resolving a branch head (`git ls-remote`), scaling a service (docker-py), removing an app's
stack, networks and images and waiting until Swarm has let go of them, reading an app's live
state, and choosing the image a rollback goes back to. Deciding what a request means is left
to `pipeline.core.admin`; queueing goes through `pipeline.queueing` and `pipeline.rollback`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import redis

from pipeline import engine
from pipeline import git as gitops
from pipeline.core.admin import choose_rollback
from pipeline.core.config import App, Platform
from pipeline.core.deployment import Deployment, new_deployment_id
from pipeline.core.render import STACK_SERVICE
from pipeline.errors import Conflict, FetchError, Unprocessable
from pipeline.queueing import LOCK_TTL_S, LockKeeper
from pipeline.store import KEEP_DEPLOYMENTS, AppQueue, Store, forget_running

log = logging.getLogger(__name__)

REMOVE_TIMEOUT_S = 90.0
# How long a removal waits for the app's running deploy to finish before answering 409.
DEPLOY_WAIT_S = 120.0
REMOVED = "app removed before this deployment ran"
POLL_S = 0.25
STACK_LABEL = "com.docker.stack.namespace"


def service_name(app: str) -> str:
    return f"{app}_{STACK_SERVICE}"


def resolve_ref(url: str, ref: str, token: str = "") -> str:
    """The commit a branch (or else a tag) names in the repository at `url`."""
    if url.startswith("-"):
        raise Unprocessable("refusing a repository URL that starts with '-'")
    wanted = [f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}"]
    try:
        refs = gitops.remote_refs(url, [f"refs/heads/{ref}", f"refs/tags/{ref}*"], token)
    except FetchError as exc:
        raise Unprocessable(f"cannot read the repository: {exc}") from exc
    for name in wanted:
        if name in refs:
            return refs[name]
    raise Unprocessable(f"the repository has no branch or tag {ref!r}")


def scale(client: docker.DockerClient, app: str, replicas: int) -> None:
    """Set the service's replica count; the stack file keeps it (see rollout.desired_replicas)."""
    try:
        service = client.services.get(service_name(app))
    except docker.errors.NotFound as exc:
        raise Conflict(f"app {app!r} has no running service yet; deploy it first") from exc
    if not service.scale(replicas):
        raise Conflict(f"Swarm did not accept scaling {app!r}")


@contextlib.contextmanager
def exclusive(
    connection: redis.Redis, app: str, wait_s: float = DEPLOY_WAIT_S
) -> Iterator[list[str]]:
    """Hold the app's deploy lock (as a worker does) and fail every queued deployment of it.

    A removal that ran beside a deploy would be undone by that deploy's `docker stack
    deploy`; holding the workers' own lock waits for a running deploy to finish and keeps
    the next one from starting. Yields the ids of the queued deployments it failed.
    """
    app_queue = AppQueue(connection, app)
    store = Store(connection)
    token = new_deployment_id()
    deadline = time.monotonic() + wait_s
    # Fail what waits now: polling for the lock, the remover would otherwise lose it to the
    # worker that the holder hands the waiting deployments over to (within milliseconds).
    failed = fail_queued(store, app_queue.drain())
    while not app_queue.lock(token, LOCK_TTL_S):
        if time.monotonic() > deadline:
            raise Conflict(f"app {app!r} is still deploying after {wait_s:.0f}s; retry later")
        failed += fail_queued(store, app_queue.drain())
        time.sleep(POLL_S)
    try:
        with LockKeeper(app_queue, token):
            yield failed + fail_queued(store, app_queue.drain())
    finally:
        app_queue.release(token)


def fail_queued(store: Store, deployment_ids: list[str]) -> list[str]:
    store.fail_unfinished(deployment_ids, REMOVED)
    forget_running(store.redis, *deployment_ids)
    return deployment_ids


def remove(client: docker.DockerClient, app: str, timeout_s: float = REMOVE_TIMEOUT_S) -> list[str]:
    """Take the app's stack down, wait until Swarm let go, drop its networks and images."""
    in_stack = {"label": f"{STACK_LABEL}={app}"}
    engine.stack_rm(app)
    deadline = time.monotonic() + timeout_s
    while client.api.services(filters=in_stack) or client.api.containers(
        all=True, filters=in_stack
    ):
        if time.monotonic() > deadline:
            raise Conflict(f"Swarm still runs parts of {app!r} after {timeout_s:.0f}s")
        time.sleep(POLL_S)
    for network in client.networks.list(filters=in_stack):
        network.remove()
    removed: list[str] = []
    for image in engine.app_images(client, app):
        client.images.remove(image.id, force=True)
        removed.extend(image.tags or [image.short_id])
    return removed


def live_state(client: docker.DockerClient, app: App, platform: Platform) -> dict[str, Any]:
    """What Swarm runs for the app now: image, commit, replicas desired and running, URLs."""
    suffix = "" if platform.http_port == 80 else f":{platform.http_port}"
    state: dict[str, Any] = {
        "urls": [f"http://{domain}{suffix}/" for domain in app.domains],
        "deployed": False,
    }
    service = engine.inspect_service(client, service_name(app.name))
    if service is None:
        return state
    spec = service.get("Spec", {})
    labels = spec.get("Labels", {})
    tasks = client.api.tasks(
        filters={"service": service_name(app.name), "desired-state": "running"}
    )
    running = [t for t in tasks if t.get("Status", {}).get("State") == "running"]
    state.update(
        deployed=True,
        image=spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", "").split("@")[0],
        commit=labels.get(engine.COMMIT_LABEL, ""),
        deployment=labels.get(engine.DEPLOYMENT_LABEL, ""),
        replicas={
            "desired": spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0),
            "running": len(running),
        },
    )
    return state


def rollback_target(client: docker.DockerClient, store: Store, app: App) -> Deployment:
    """The deployment a rollback goes back to (see `choose_rollback`); refused when none."""
    service = engine.inspect_service(client, service_name(app.name))
    if service is None:
        raise Conflict(f"app {app.name!r} is not deployed; nothing to roll back")
    live_image = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0]
    local = {tag for image in engine.app_images(client, app.name) for tag in image.tags}
    target = choose_rollback(store.recent(app.name, count=KEEP_DEPLOYMENTS), live_image, local)
    if target is None:
        raise Unprocessable(f"app {app.name!r} has no earlier good image to roll back to")
    return target
