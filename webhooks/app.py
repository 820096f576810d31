"""The Starlette application: routes, shared state, and health.

`create_app(settings, config)` builds the app with everything it needs; nothing is read from
the environment or disk after that, so a misconfiguration stops start-up, not a request.
"""

from __future__ import annotations

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pipeline.core.config import Config
from pipeline.settings import Settings
from webhooks import admin, github

# Redis answers in well under a millisecond when it is up; waiting longer only delays the
# 503 that tells GitHub to retry.
REDIS_TIMEOUT_S = 2.0


def connect_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )


async def health(request: Request) -> JSONResponse:
    connection: redis.Redis = request.app.state.redis
    try:
        await run_in_threadpool(connection.ping)
    except redis.RedisError:
        return JSONResponse({"status": "unavailable", "redis": "down"}, status_code=503)
    return JSONResponse({"status": "ok", "redis": "ok"})


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
            *admin.routes,  # the admin API (webhooks/admin.py)
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.settings = settings
    app.state.config = config
    app.state.redis = connection if connection is not None else connect_redis(settings.redis_url)
    return app
