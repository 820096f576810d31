"""Rollout planning and judging, over plain dicts shaped like Docker's service and task JSON.

`desired_replicas` says how many replicas a deploy asks for; `assess` reads a service and its
tasks after `docker stack deploy` and says whether the rollout is still going, converged on
the new image, or failed (Swarm rolled back, paused, or the tasks keep dying).

Swarm's states: https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Service
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONFIG_REPLICAS_LABEL = "nephelios.config-replicas"
# A first deploy has no previous version to roll back to; give up after this many tasks of
# the new image have died rather than waiting for the deadline.
MAX_FAILED_TASKS = 3
FAILED_TASK_STATES = {"failed", "rejected", "orphaned"}


def desired_replicas(config_replicas: int, service: Mapping[str, Any] | None) -> int:
    """Keep the running count (after `/scale`) unless nephelios.yml's `replicas` changed."""
    if service is None:
        return config_replicas
    spec = service.get("Spec", {})
    deployed_config = spec.get("Labels", {}).get(CONFIG_REPLICAS_LABEL)
    running = spec.get("Mode", {}).get("Replicated", {}).get("Replicas")
    if deployed_config != str(config_replicas) or not isinstance(running, int):
        return config_replicas
    return running


def update_started_at(service: Mapping[str, Any] | None) -> str | None:
    if service is None:
        return None
    status = service.get("UpdateStatus") or {}
    started = status.get("StartedAt")
    return started if isinstance(started, str) else None


@dataclass(frozen=True)
class Progress:
    done: bool
    ok: bool = False
    reason: str = ""


WAITING = Progress(done=False)


def _image_name(image: str) -> str:
    # Swarm may pin `name:tag@sha256:...`; the tag is what identifies our build.
    return image.split("@", 1)[0]


def assess(
    service: Mapping[str, Any],
    tasks: Sequence[Mapping[str, Any]],
    image: str,
    previous_update: str | None,
    was_update: bool,
) -> Progress:
    """Judge a rollout of `image`; `previous_update` is UpdateStatus.StartedAt before deploy."""
    spec = service.get("Spec", {})
    spec_image = spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", "")
    status = service.get("UpdateStatus") or {}
    state = status.get("State")
    message = status.get("Message") or ""
    new_update = bool(status) and status.get("StartedAt") != previous_update

    if new_update and state in ("rollback_completed", "rollback_paused", "paused"):
        return Progress(done=True, ok=False, reason=_failure(state, message))
    if _image_name(spec_image) != image:
        # Swarm rolled the spec back (or another deploy replaced it) without us seeing
        # the rollback state; either way this rollout did not stick.
        if not was_update or new_update:
            return Progress(done=True, ok=False, reason="service no longer runs this image")
        return WAITING
    replicas = spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0)
    if replicas == 0:
        # Swarm starts no update for a service with no tasks, so none will complete: with
        # the new image in the spec there is nothing more to wait for.
        return Progress(done=True, ok=True, reason="0 replicas wanted (scaled to 0)")
    if was_update and not (new_update and state == "completed"):
        return WAITING

    mine = [t for t in tasks if _image_name(_task_image(t)) == image]
    running = [t for t in mine if _state(t) == "running" and t.get("DesiredState") == "running"]
    if len(running) >= replicas:
        return Progress(done=True, ok=True, reason=f"{len(running)}/{replicas} tasks running")
    failed = [t for t in mine if _state(t) in FAILED_TASK_STATES or _exited(t)]
    if not was_update and len(failed) >= MAX_FAILED_TASKS:
        errors = [t.get("Status", {}).get("Err") for t in failed]
        detail = next((e for e in errors if e), "tasks keep exiting")
        return Progress(done=True, ok=False, reason=f"new tasks fail: {detail}")
    return WAITING


def _failure(state: str, message: str) -> str:
    if state == "paused":
        return f"rollout paused by Swarm: {message}".rstrip(": ")
    return f"Swarm rolled back the update: {message}".rstrip(": ")


def _task_image(task: Mapping[str, Any]) -> str:
    image = task.get("Spec", {}).get("ContainerSpec", {}).get("Image", "")
    return image if isinstance(image, str) else ""


def _state(task: Mapping[str, Any]) -> str:
    state = task.get("Status", {}).get("State", "")
    return state if isinstance(state, str) else ""


def _exited(task: Mapping[str, Any]) -> bool:
    return _state(task) in ("complete", "shutdown") and task.get("DesiredState") == "running"
