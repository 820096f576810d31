"""The Starlette application: routes, shared state, health and metrics.

`create_app(settings, config)` builds the app with everything it needs; nothing is read from
the environment or disk after that, so a misconfiguration stops start-up, not a request.
(The Docker client for `/health` follows `DOCKER_HOST` like every docker-py client.)
"""

from __future__ import annotations

import docker
import docker.errors
import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pipeline.core.config import Config
from pipeline.metrics import RedisCollector
from pipeline.settings import Settings
from webhooks import admin, github

# Redis answers in well under a millisecond when it is up; waiting longer only delays the
# 503 that tells GitHub to retry.
REDIS_TIMEOUT_S = 2.0
DOCKER_TIMEOUT_S = 2


def connect_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )


def _redis_answers(connection: redis.Redis) -> bool:
    try:
        connection.ping()
    except redis.RedisError:
        return False
    return True


def _docker_answers() -> bool:
    try:
        client = docker.from_env(timeout=DOCKER_TIMEOUT_S)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except docker.errors.DockerException:
        return False
    except OSError:  # requests' connection errors on some docker-py paths
        return False


async def health(request: Request) -> JSONResponse:
    """200 when Redis and the Docker engine answer; 503 naming what is down."""
    checks = {
        "redis": await run_in_threadpool(_redis_answers, request.app.state.redis),
        "docker": await run_in_threadpool(_docker_answers),
    }
    body: dict[str, object] = {name: "ok" if up else "down" for name, up in checks.items()}
    down = [name for name, up in checks.items() if not up]
    if down:
        body["status"] = "unavailable"
        body["error"] = f"{' and '.join(down)} not answering"
        return JSONResponse(body, status_code=503)
    body["status"] = "ok"
    return JSONResponse(body)


async def metrics(request: Request) -> Response:
    """Prometheus text format, read from the counts every process keeps in Redis."""
    registry: CollectorRegistry = request.app.state.metrics
    try:
        text = await run_in_threadpool(generate_latest, registry)
    except redis.RedisError:
        return PlainTextResponse("redis not answering\n", status_code=503)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404 and 405 in the shape of every other refusal: one JSON line."""
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


def create_app(
    settings: Settings, config: Config, connection: redis.Redis | None = None
) -> Starlette:
    app = Starlette(
        routes=[
            Route("/webhooks/github", github.receive, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *admin.routes,  # the admin API (webhooks/admin.py)
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.settings = settings
    app.state.config = config
    app.state.redis = connection if connection is not None else connect_redis(settings.redis_url)
    app.state.metrics = CollectorRegistry(auto_describe=False)
    app.state.metrics.register(RedisCollector(app.state.redis, settings.queue_name))
    return app
