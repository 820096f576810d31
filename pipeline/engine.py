"""The Docker engine, thinly: image builds, `docker stack deploy`, rollout watching, prunes.

docker-py does builds, inspection and image removal; the Docker CLI does `docker stack
deploy`, which the API has no call for. Deciding what a rollout's state means is left to
`pipeline.core.rollout`.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from functools import cache
from typing import IO, Any

import docker
import docker.errors
import urllib3.exceptions

from pipeline.core.rollout import Progress, assess
from pipeline.errors import BuildError, DeployError, RolloutError

log = logging.getLogger(__name__)

APP_LABEL = "nephelios.app"
COMMIT_LABEL = "nephelios.commit"
DEPLOYMENT_LABEL = "nephelios.deployment"
POLL_S = 0.5
LOG_TAIL_LINES = 30


def client(timeout_s: int = 60) -> docker.DockerClient:
    return docker.from_env(timeout=timeout_s)


def build_image(
    engine: docker.DockerClient,
    context: IO[bytes],
    tag: str,
    labels: Mapping[str, str],
    dockerfile: str,
    on_line: Callable[[str], None],
    timeout_s: int,
    target: str | None = None,
    buildargs: Mapping[str, str] | None = None,
) -> str:
    """Build `context` as `tag`, streaming each log line to `on_line`; return the image id.

    `target` and `buildargs` are the app's build options (a stage, `--build-arg`s).
    """
    # What docker's build API is told besides the context: the same for a second attempt.
    options: dict[str, Any] = {
        "tag": tag,
        "labels": dict(labels),
        "dockerfile": dockerfile,
        "target": target,
        "buildargs": dict(buildargs or {}),
    }
    try:
        return _build(engine, context, options, on_line, timeout_s)
    except BuildError as exc:
        # The classic builder reuses other apps' intermediate images as its cache; when a
        # prune of another app removes one mid-build, the build fails with "No such image".
        # That is not the app's fault: build once more from the start.
        if CACHE_RACE not in str(exc) or not context.seekable():
            raise
    on_line(f"the build cache changed during the build ({CACHE_RACE}); building again")
    context.seek(0)
    return _build(engine, context, options, on_line, timeout_s)


CACHE_RACE = "No such image"


def _build(
    engine: docker.DockerClient,
    context: IO[bytes],
    options: dict[str, Any],
    on_line: Callable[[str], None],
    timeout_s: int,
) -> str:
    lines: list[str] = []
    image_id = ""
    # The read timeout covers a quiet step (a long RUN that prints nothing), so it must be
    # the whole build budget, not docker-py's 60 s default.
    chunks = engine.api.build(
        fileobj=context,
        custom_context=True,
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
        timeout=timeout_s,
        **options,
    )
    deadline = time.monotonic() + timeout_s
    try:
        for chunk in chunks:
            if time.monotonic() > deadline:
                raise BuildError(f"build took longer than {timeout_s}s", _tail(lines))
            if "error" in chunk:
                message = str(chunk["error"]).strip()
                on_line(message)
                lines.append(message)
                raise BuildError(f"build failed: {message}", _tail(lines))
            text = chunk.get("stream")
            if isinstance(text, str):
                for line in text.splitlines():
                    if line.strip():
                        on_line(line)
                        lines.append(line)
            aux = chunk.get("aux")
            if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
                image_id = aux["ID"]
    except docker.errors.APIError as exc:
        raise BuildError(f"build failed: {exc.explanation or exc}", _tail(lines)) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise BuildError(f"build took longer than {timeout_s}s", _tail(lines)) from exc
    except (OSError, urllib3.exceptions.HTTPError) as exc:  # dropped connections
        raise BuildError(f"build interrupted: {exc}", _tail(lines)) from exc
    if not image_id:
        image_id = engine.images.get(options["tag"]).id
    return image_id


def _tail(lines: list[str]) -> str:
    return "\n".join(lines[-LOG_TAIL_LINES:])


def push_image(engine: docker.DockerClient, tag: str, on_line: Callable[[str], None]) -> None:
    repository, _, version = tag.rpartition(":")
    for chunk in engine.api.push(repository, tag=version, stream=True, decode=True):
        if "error" in chunk:
            raise BuildError(f"push failed: {chunk['error']}")
        if chunk.get("status") and not chunk.get("progressDetail"):
            on_line(f"push: {chunk['status']}")


@cache
def _cli_has_detach() -> bool:
    # `--detach` appeared in Docker CLI 26, which waits by default; older CLIs never wait.
    help_text = subprocess.run(
        ["docker", "stack", "deploy", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return "--detach" in help_text


def stack_deploy(stack: str, stack_file: str, registry_auth: bool, timeout_s: int = 120) -> None:
    """Run `docker stack deploy` for one stack file; raise DeployError with the CLI's reason."""
    with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix="nephelios-") as handle:
        handle.write(stack_file)
        handle.flush()
        argv = ["docker", "stack", "deploy", "--compose-file", handle.name, "--prune"]
        # No registry means the image exists only on this engine; asking a registry for its
        # digest would fail or hang.
        argv += (
            ["--with-registry-auth", "--resolve-image", "always"]
            if registry_auth
            else ["--resolve-image", "never"]
        )
        if _cli_has_detach():
            argv.append("--detach=true")
        argv.append(stack)
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise DeployError(f"docker stack deploy took over {timeout_s}s") from exc
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeployError(f"docker stack deploy failed: {reason}")


def stack_rm(stack: str) -> None:
    subprocess.run(["docker", "stack", "rm", stack], capture_output=True, check=False)


def inspect_service(engine: docker.DockerClient, name: str) -> dict[str, Any] | None:
    try:
        service: dict[str, Any] = engine.api.inspect_service(name)
    except docker.errors.NotFound:
        return None
    return service


def watch_rollout(
    engine: docker.DockerClient,
    service_name: str,
    image: str,
    previous_update: str | None,
    was_update: bool,
    timeout_s: float,
) -> Progress:
    """Poll the service until `assess` says the rollout converged or failed, or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        service = inspect_service(engine, service_name)
        if service is None:
            raise RolloutError(f"service {service_name} disappeared during the rollout")
        tasks = engine.api.tasks(filters={"service": service_name})
        progress = assess(service, tasks, image, previous_update, was_update)
        if progress.done:
            return progress
        time.sleep(POLL_S)
    raise RolloutError(f"rollout did not converge within {int(timeout_s)}s")


def wait_old_tasks_stopped(
    engine: docker.DockerClient, service_name: str, timeout_s: float
) -> bool:
    """Wait until the tasks a rollout replaced have stopped; False when time ran out.

    Swarm reports an update completed while replaced containers are still in their stop
    grace period; their images cannot be removed until they exit.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tasks = engine.api.tasks(filters={"service": service_name})
        if not any(
            t.get("DesiredState") != "running" and t.get("Status", {}).get("State") == "running"
            for t in tasks
        ):
            return True
        time.sleep(POLL_S)
    return False


def prune_images(
    engine: docker.DockerClient, app: str, keep: int, live: set[str]
) -> tuple[list[str], list[str]]:
    """Remove the app's images beyond the newest `keep`, never one in `live`.

    Returns the tags removed and the ids of those that could not go yet (still used by a
    running container: a replaced task in its stop grace period).
    """
    removed: list[str] = []
    in_use: list[str] = []
    for image in images_beyond(engine, app, keep, live):
        try:
            engine.images.remove(image.id, force=True)
        except docker.errors.APIError as exc:
            log.info("prune %s: keeping %s: %s", app, image.short_id, exc.explanation)
            in_use.append(image.short_id)
            continue
        removed.extend(image.tags or [image.short_id])
    return removed, in_use


def images_beyond(
    engine: docker.DockerClient, app: str, keep: int, live: set[str]
) -> list[docker.models.images.Image]:
    """The app's images older than the newest `keep`, except those in `live`."""
    images = app_images(engine, app)
    return [image for image in images[keep:] if not (set(image.tags) & live or image.id in live)]


def app_images(engine: docker.DockerClient, app: str) -> list[docker.models.images.Image]:
    """The app's images, newest first (by their creation time, to the nanosecond).

    docker-py's `images.list` inspects every image it listed and fails on one removed in
    between (a prune by a worker while the admin API looks); such an image is skipped.
    """
    found = []
    for summary in engine.api.images(filters={"label": f"{APP_LABEL}={app}"}):
        try:
            found.append(engine.images.get(summary["Id"]))
        except docker.errors.ImageNotFound:
            continue
    found.sort(key=lambda image: image.attrs.get("Created", ""), reverse=True)
    return found


def image_argv(engine: docker.DockerClient, tag: str) -> tuple[list[str], list[str]]:
    """The image's Entrypoint and Cmd, for a stack that wraps the entrypoint."""
    config = engine.images.get(tag).attrs.get("Config") or {}
    return list(config.get("Entrypoint") or []), list(config.get("Cmd") or [])


def has_healthcheck(engine: docker.DockerClient, tag: str) -> bool:
    """Whether the image carries a HEALTHCHECK (`HEALTHCHECK NONE` does not count)."""
    config = engine.images.get(tag).attrs.get("Config") or {}
    test = (config.get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test != ["NONE"]


def has_image(engine: docker.DockerClient, tag: str) -> bool:
    try:
        engine.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True
