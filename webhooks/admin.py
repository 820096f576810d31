"""The admin API: create, remove, scale, inspect, redeploy and roll back apps over HTTP.

Every call needs `Authorization: Bearer <NEPHELIOS_ADMIN_TOKEN>`, compared in constant time;
with no token configured every call is refused (403). Bad input is answered with a 4xx and
`{"error": "<one line>"}`; nothing is stored, queued or changed in Swarm before the input has
been checked. Responses carry env variable names, never their values.

Slow work (git ls-remote, Docker calls, waiting for Swarm to remove a stack) runs in the
thread pool. `/create` and the redeploy call only queue a deployment and answer 202 with its
id; `GET /deployments/{id}?offset=N` returns the log from line N on, so a client follows a
deployment by asking again with `next_offset`.
"""

from __future__ import annotations

import hmac
import json
import logging
import shutil
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

import docker
import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pipeline import admin as ops
from pipeline import appdata, engine
from pipeline.apps import AppFile, stored_names, with_stored
from pipeline.core import admin as checks
from pipeline.core.config import APP_NAME_RE, App, Config, route_owner
from pipeline.errors import (
    AdminDisabled,
    AdminError,
    ConfigError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnknownApp,
)
from pipeline.queueing import enqueue_deployment
from pipeline.rollback import enqueue_rollback
from pipeline.settings import Settings
from pipeline.store import Store
from webhooks.github import read_body
from webhooks.openapi import openapi

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
RECENT_DEPLOYMENTS = 10
Handler = Callable[[Request], Awaitable[JSONResponse]]


class BodyTooLarge(AdminError):
    status = 413


def check_token(settings: Settings, header: str | None) -> None:
    if not settings.admin_token:
        raise AdminDisabled(
            "the admin API is disabled: NEPHELIOS_ADMIN_TOKEN is not set "
            "(nor NEPHELIOS_ADMIN_TOKEN_FILE)"
        )
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("missing 'Authorization: Bearer <token>' header")
    if not hmac.compare_digest(given.strip().encode(), settings.admin_token.encode()):
        raise Unauthorized("wrong admin token")


def admin_call(handler: Handler) -> Handler:
    """Check the token, then turn AdminError into its 4xx and an unreachable backend into 503."""

    @wraps(handler)
    async def call(request: Request) -> JSONResponse:
        try:
            check_token(request.app.state.settings, request.headers.get("authorization"))
            return await handler(request)
        except AdminError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)
        except ConfigError as exc:
            # A broken stored app (apps.json edited by hand): say where, once, never a trace.
            log.error("admin %s: unusable configuration: %s", request.url.path, exc.without_value)
            error = f"configuration unusable: {exc.without_value}"
            return JSONResponse({"error": error}, status_code=500)
        except redis.RedisError as exc:
            log.error("admin %s: Redis: %s", request.url.path, exc)
            return JSONResponse({"error": "Redis unavailable; retry later"}, status_code=503)
        except docker.errors.DockerException as exc:
            log.error("admin %s: Docker: %s", request.url.path, exc)
            return JSONResponse({"error": "Docker engine unavailable"}, status_code=503)

    return call


async def json_body(request: Request) -> Any:
    try:
        body = await read_body(request, MAX_BODY_BYTES)
    except PayloadTooLarge as exc:
        raise BodyTooLarge(f"body too large (limit {MAX_BODY_BYTES} bytes)") from exc
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise AdminError(f"the body is not valid JSON: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise AdminError("the body is not UTF-8") from exc


def docker_of(request: Request) -> docker.DockerClient:
    """One Docker client per application, made on first use (GET /health needs none)."""
    client: docker.DockerClient | None = getattr(request.app.state, "docker", None)
    if client is None:
        client = engine.client()
        request.app.state.docker = client
    return client


def config_of(request: Request) -> Config:
    settings: Settings = request.app.state.settings
    return with_stored(settings, request.app.state.config)


def known_app(request: Request, name: str) -> App:
    app = config_of(request).apps.get(checks.check_app_name(name))
    if app is None:
        raise UnknownApp(f"no app named {name!r}")
    return app


def path_name(request: Request) -> str:
    name = request.path_params["name"]
    if not APP_NAME_RE.match(name):
        raise UnknownApp(f"no app named {name[:60]!r}")
    return str(name)


# --- calls -----------------------------------------------------------------------------------


@admin_call
async def create(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    config = config_of(request)
    wanted = checks.parse_create(await json_body(request), config.platform, settings.max_replicas)
    app = wanted.app
    if app.name in config.apps:
        raise Conflict(f"app {app.name!r} exists already")
    clash = route_owner(config.apps, app)
    if clash is not None:
        raise Conflict(f"domains: {clash[0]!r} is already routed to app {clash[1]!r}")
    url, token = app.clone_url(config.platform), settings.github_token
    commit = await run_in_threadpool(ops.resolve_ref, url, app.branch, token)
    store = AppFile(settings.apps_file)
    await run_in_threadpool(store.add, app.name, wanted.raw, set(config.apps))
    try:
        deployment = await run_in_threadpool(
            enqueue_deployment,
            request.app.state.redis,
            settings.queue_name,
            app,
            commit,
            f"refs/heads/{app.branch}",
            "api:create",
        )
    except redis.RedisError:
        store.remove(app.name)  # nothing half-done: no stored app without its first deploy
        raise
    log.info("admin: created %s; first deployment %s of %s", app.name, deployment.id, commit)
    return JSONResponse(
        {"app_name": app.name, "deployment": deployment.id, "commit": commit}, status_code=202
    )


def remove_app_volumes(client: docker.DockerClient, app: str) -> list[str]:
    try:
        return appdata.remove_volumes(client, app)
    except appdata.VolumesInUse as exc:
        raise Conflict(str(exc)) from exc


@admin_call
async def remove(request: Request) -> JSONResponse:
    fields = await json_body(request)
    name = checks.parse_remove(fields)
    app = known_app(request, name)
    body = await run_in_threadpool(
        remove_app, request, app.name, checks.remove_volumes_asked(fields)
    )
    log.info("admin: removed %s (%d images)", app.name, len(body["images"]))
    return JSONResponse(body)


def remove_app(request: Request, name: str, with_volumes: bool) -> dict[str, Any]:
    """Remove under the app's deploy lock, so that no deploy brings the stack back."""
    settings: Settings = request.app.state.settings
    client = docker_of(request)
    with ops.exclusive(request.app.state.redis, name) as dropped:
        images = ops.remove(client, name)
        body: dict[str, Any] = {"app_name": name, "removed": True, "images": images}
        if dropped:
            body["cancelled"] = dropped
        if with_volumes:  # app model (issue 8): volumes go only when asked for
            body["volumes"] = remove_app_volumes(client, name)
        if name not in stored_names(settings):
            body["note"] = (
                f"{name!r} is declared in {request.app.state.config.source}: its stack is "
                "down, but it stays declared and the next push to its branch deploys it again"
            )
            return body
        AppFile(settings.apps_file).remove(name)
        # The app is gone for good: nothing could use or delete its secrets any more.
        body["secrets"] = appdata.prune_secrets(client, name, keep=set())
    shutil.rmtree(settings.git_cache_dir / f"{name}.git", ignore_errors=True)
    return body


@admin_call
async def scale(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    name, replicas = checks.parse_scale(await json_body(request), settings.max_replicas)
    app = known_app(request, name)
    await run_in_threadpool(ops.scale, docker_of(request), app.name, replicas)
    log.info("admin: scaled %s to %d", app.name, replicas)
    return JSONResponse({"app_name": app.name, "replicas": replicas})


@admin_call
async def list_apps(request: Request) -> JSONResponse:
    config = config_of(request)
    stored = stored_names(request.app.state.settings)
    client = docker_of(request)
    apps = []
    for app in config.apps.values():
        live = await run_in_threadpool(ops.live_state, client, app, config.platform)
        apps.append(describe(app, stored, live))
    return JSONResponse({"apps": apps})


@admin_call
async def show_app(request: Request) -> JSONResponse:
    config = config_of(request)
    app = known_app(request, path_name(request))
    live = await run_in_threadpool(ops.live_state, docker_of(request), app, config.platform)
    body = describe(app, stored_names(request.app.state.settings), live)
    recent = await run_in_threadpool(Store(request.app.state.redis).recent, app.name)
    body["deployments"] = [public(d.to_dict()) for d in recent[:RECENT_DEPLOYMENTS]]
    return JSONResponse(body)


def describe(app: App, stored: set[str], live: dict[str, Any]) -> dict[str, Any]:
    source = "api" if app.name in stored else "nephelios.yml"
    return {**checks.redacted(app), "source": source, "live": live}


def public(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != "history"}


@admin_call
async def show_deployment(request: Request) -> JSONResponse:
    deployment_id = request.path_params["id"]
    offset_text = request.query_params.get("offset", "0")
    if not offset_text.isdigit() or len(offset_text) > 9:
        raise AdminError(f"offset: expected a line number (got {offset_text[:20]!r})")
    store = Store(request.app.state.redis)
    deployment = await run_in_threadpool(store.get, deployment_id)
    if deployment is None:
        raise NotFound(f"no deployment {deployment_id[:40]!r}")
    offset = int(offset_text)
    lines = await run_in_threadpool(store.read_log, deployment.id, offset)
    body = {
        **deployment.to_dict(),
        "finished": deployment.finished,
        "log": lines,
        "next_offset": offset + len(lines),
    }
    return JSONResponse(body)


@admin_call
async def redeploy(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    config = config_of(request)
    app = known_app(request, path_name(request))
    wanted = checks.parse_deploy(await json_body(request))
    if wanted.commit:
        commit, ref = wanted.commit, "api"
    else:
        ref = wanted.ref or app.branch
        url, token = app.clone_url(config.platform), settings.github_token
        commit = await run_in_threadpool(ops.resolve_ref, url, ref, token)
    deployment = await run_in_threadpool(
        enqueue_deployment,
        request.app.state.redis,
        settings.queue_name,
        app,
        commit,
        ref,
        "api:deploy",
    )
    body = {"app_name": app.name, "deployment": deployment.id, "commit": commit}
    return JSONResponse(body, status_code=202)


@admin_call
async def rollback(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    app = known_app(request, path_name(request))
    connection: redis.Redis = request.app.state.redis
    target = await run_in_threadpool(
        ops.rollback_target, docker_of(request), Store(connection), app
    )
    deployment = await run_in_threadpool(
        enqueue_rollback, connection, settings.queue_name, app, target
    )
    body = {
        "app_name": app.name,
        "deployment": deployment.id,
        "commit": target.commit,
        "image": target.image,
    }
    return JSONResponse(body, status_code=202)


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(openapi())


routes = [
    Route("/create", create, methods=["POST"]),
    Route("/remove", remove, methods=["POST"]),
    Route("/scale", scale, methods=["POST"]),
    Route("/apps", list_apps, methods=["GET"]),
    Route("/apps/{name}", show_app, methods=["GET"]),
    Route("/apps/{name}/deploy", redeploy, methods=["POST"]),
    Route("/apps/{name}/rollback", rollback, methods=["POST"]),
    Route("/deployments/{id}", show_deployment, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
]
