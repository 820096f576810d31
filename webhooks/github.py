"""`POST /webhooks/github`: verify, parse, match, record, enqueue, answer.

Nothing slow happens here: no git, no Docker, no outgoing HTTP; only Redis writes, and
none at all when nothing is to be queued. The response says, for every app the delivery
concerns, whether it was queued (with the deployment id) or ignored and why:

- 200 for a ping (repository or organisation hook);
- 202 for everything accepted, queued or ignored, with `apps: [{app, status, reason}]`,
  and 200 for a redelivery of an accepted delivery id (`duplicate: true`);
- 400 malformed, 401 bad signature (never echoing a digest), 413 over GitHub's 25 MB cap;
- 503 when Redis cannot record the work, so GitHub's delivery log shows the failure.
"""

from __future__ import annotations

import logging

import redis
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from pipeline import metrics
from pipeline.apps import with_stored
from pipeline.core.config import Config
from pipeline.core.github import (
    Decision,
    Delivery,
    Push,
    Release,
    plan_other,
    plan_push,
    plan_release,
    verify_signature,
)
from pipeline.errors import ConfigError, PayloadTooLarge, WebhookError
from pipeline.intake import record
from pipeline.settings import Settings

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
    # Counted once the answer is sent, so GitHub's wait does not include the metric write.
    response.background = BackgroundTask(metrics.count_delivery, connection, event, outcome)
    return response


# A delivery refused before its signature checked out is counted under this event: its
# X-GitHub-Event header is unverified, and counting any header value would let anyone add
# metric series.
UNVERIFIED = "unverified"


async def answer(request: Request) -> tuple[str, str, JSONResponse]:
    """The response to one delivery, with its event and outcome for the delivery metrics."""
    settings: Settings = request.app.state.settings
    event = UNVERIFIED
    try:
        body = await read_body(request)
        verify_signature(body, request.headers.get("x-hub-signature-256"), settings.webhook_secret)
        delivery = Delivery.from_request(request.headers, body)
        event = delivery.event
        if event == "ping":
            return event, "ping", _pong(delivery)
        # Apps created through the admin API deploy on push like those in nephelios.yml.
        config = with_stored(settings, request.app.state.config)
        decisions = plan(delivery, config)
    except WebhookError as exc:
        log.info("webhook refused (%d): %s", exc.status, exc)
        return event, "refused", JSONResponse({"error": str(exc)}, status_code=exc.status)
    except ConfigError as exc:
        # A broken stored app (apps.json edited by hand): one line, never a traceback.
        log.error("webhook: unusable configuration: %s", exc.without_value)
        error = {"error": f"configuration unusable: {exc.without_value}"}
        return event, "unavailable", JSONResponse(error, status_code=500)

    if not any(d.queue for d in decisions):
        return event, "ignored", _ignored(delivery, decisions)
    try:
        outcome = await run_in_threadpool(
            record, request.app.state.redis, settings, config, delivery, decisions
        )
    except redis.RedisError as exc:
        log.error("delivery %s: cannot record work: %s", delivery.delivery_id, exc)
        unavailable = JSONResponse({"error": "queue unavailable; retry later"}, status_code=503)
        return event, "unavailable", unavailable
    # A redelivery changes nothing: 200, where newly accepted work is 202.
    if outcome.get("duplicate"):
        return event, "duplicate", JSONResponse(outcome, status_code=200)
    # Count what happened: a delivery whose every app was queued before queues nothing.
    queued = any(app["status"] == "queued" for app in outcome["apps"])
    return event, "queued" if queued else "ignored", JSONResponse(outcome, status_code=202)


def plan(delivery: Delivery, config: Config) -> list[Decision]:
    """Every app the delivery's repository builds, each with what this event means for it."""
    apps = config.apps.values()
    if delivery.event == "push":
        return plan_push(Push.from_delivery(delivery), apps)
    if delivery.event == "release":
        return plan_release(Release.from_delivery(delivery), apps)
    return plan_other(delivery, apps)


def _pong(delivery: Delivery) -> JSONResponse:
    # Organisation hooks ping without a repository; the hook's target is named instead.
    hook = delivery.payload.get("hook")
    target = hook.get("type") if isinstance(hook, dict) else None
    body = {"delivery": delivery.delivery_id, "event": "ping", "pong": True}
    body["hook_type"] = target if isinstance(target, str) else "unknown"
    return JSONResponse(body, status_code=200)


def _ignored(delivery: Delivery, decisions: list[Decision]) -> JSONResponse:
    """Nothing to queue: 202 with the reason, overall and per app, and no Redis write."""
    if decisions:
        reason = "no app is deployed by this delivery"
    elif delivery.event in ("push", "release"):
        reason = f"no app is configured for {delivery.repository}"
    else:
        reason = f"event {delivery.event!r} does not deploy anything"
    body = {
        "delivery": delivery.delivery_id,
        "event": delivery.event,
        "ignored": reason,
        "apps": [{"app": d.app, "status": "ignored", "reason": d.reason} for d in decisions],
    }
    return JSONResponse(body, status_code=202)
