"""`POST /webhooks/github`: verify, parse, match, record, enqueue, answer.

Nothing slow happens here: no git, no Docker, no outgoing HTTP; only Redis writes. The
response says, for every app the delivery concerns, whether it was queued (with the
deployment id) or ignored and why.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from pipeline import metrics
from pipeline.core.config import Config
from pipeline.core.github import Decision, Delivery, Push, plan_push, verify_signature
from pipeline.errors import PayloadTooLarge, WebhookError
from pipeline.queueing import enqueue_deployment
from pipeline.settings import Settings
from pipeline.store import Store

log = logging.getLogger(__name__)

# GitHub caps webhook payloads at 25 MB and does not deliver larger ones.
MAX_BODY_BYTES = 25 * 1024 * 1024


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed `limit`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def receive(request: Request) -> JSONResponse:
    event, outcome, response = await answer(request)
    connection: redis.Redis = request.app.state.redis
    await run_in_threadpool(metrics.count_delivery, connection, event, outcome)
    return response


# A refused delivery is counted under this event: its X-GitHub-Event header is unverified, and
# counting arbitrary header values would let anyone add metric series.
UNVERIFIED = "unverified"


async def answer(request: Request) -> tuple[str, str, JSONResponse]:
    """The response to one delivery, with its event and outcome for the delivery metrics."""
    settings: Settings = request.app.state.settings
    try:
        body = await read_body(request)
        verify_signature(body, request.headers.get("x-hub-signature-256"), settings.webhook_secret)
        delivery = Delivery.from_request(request.headers, body)
    except WebhookError as exc:
        log.info("webhook refused (%d): %s", exc.status, exc)
        return UNVERIFIED, "refused", JSONResponse({"error": str(exc)}, status_code=exc.status)

    event = delivery.event
    if event == "ping":
        pong = {"delivery": delivery.delivery_id, "event": "ping", "pong": True}
        return event, "ping", JSONResponse(pong)
    if event != "push":
        return event, "ignored", _ignored(delivery, f"event {event!r} does not deploy anything")
    try:
        push = Push.from_delivery(delivery)
    except WebhookError as exc:
        return event, "refused", JSONResponse({"error": str(exc)}, status_code=exc.status)

    config: Config = request.app.state.config
    decisions = plan_push(push, config.apps.values())
    if not decisions:
        return event, "ignored", _ignored(delivery, f"no app is configured for {push.repository}")
    try:
        outcome = await run_in_threadpool(
            record, request.app.state.redis, settings, config, delivery, decisions
        )
    except redis.RedisError as exc:
        log.error("delivery %s: cannot record work: %s", delivery.delivery_id, exc)
        unavailable = JSONResponse({"error": "queue unavailable; retry later"}, status_code=503)
        return event, "unavailable", unavailable
    if outcome.get("duplicate"):
        return event, "duplicate", JSONResponse(outcome, status_code=200)
    if any(d.queue for d in decisions):
        return event, "queued", JSONResponse(outcome, status_code=202)
    return event, "ignored", JSONResponse(outcome, status_code=200)


def _ignored(delivery: Delivery, reason: str) -> JSONResponse:
    body = {"delivery": delivery.delivery_id, "event": delivery.event, "ignored": reason}
    return JSONResponse(body, status_code=202)


def record(
    connection: redis.Redis,
    settings: Settings,
    config: Config,
    delivery: Delivery,
    decisions: list[Decision],
) -> dict[str, Any]:
    """Remember the delivery id and enqueue one deployment per queued decision."""
    body: dict[str, Any] = {"delivery": delivery.delivery_id, "event": delivery.event}
    store = Store(connection)
    wanted = [d for d in decisions if d.queue]
    if wanted and not store.accept_delivery(delivery.delivery_id):
        body["duplicate"] = True
        body["apps"] = [{"app": d.app, "status": "duplicate"} for d in wanted]
        return body
    apps = []
    try:
        for decision in decisions:
            if not decision.queue:
                apps.append({"app": decision.app, "status": "ignored", "reason": decision.reason})
                continue
            assert decision.commit and decision.ref
            deployment = enqueue_deployment(
                connection,
                settings.queue_name,
                config.apps[decision.app],
                decision.commit,
                decision.ref,
                trigger=f"delivery:{delivery.delivery_id}",
            )
            apps.append(
                {
                    "app": decision.app,
                    "status": "queued",
                    "deployment": deployment.id,
                    "commit": decision.commit,
                }
            )
            log.info(
                "delivery %s: queued %s %s as %s",
                delivery.delivery_id,
                decision.app,
                decision.commit[:12],
                deployment.id,
            )
    except redis.RedisError:
        # Let GitHub's redelivery try again rather than answer a duplicate next time.
        try:
            store.forget_delivery(delivery.delivery_id)
        except redis.RedisError:
            log.warning("delivery %s: could not forget the id", delivery.delivery_id)
        raise
    body["apps"] = apps
    return body
