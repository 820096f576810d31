"""Turning the decisions about one delivery into queued work, each piece exactly once.

`record` runs in the request: Redis writes only, no git, Docker or network call. It marks
the delivery id as accepted, claims each (app, commit) so that the same commit is never
queued twice for an app whatever the delivery ids, and enqueues one deployment per claim.
When Redis fails half-way, the claims that produced nothing and the delivery id are undone
and the error goes up, so the receiver answers 503 and GitHub's redelivery finishes the job.

A release names a tag, not a commit. Its deployment is recorded and queued at once, under
a claim on the tag, with its commit left empty: the deploy job asks the repository which
commit the tag points at (in a worker, never in the request) and claims that commit then.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from pipeline.core.config import App, Config
from pipeline.core.deployment import log_fields, new_deployment_id
from pipeline.core.github import Decision, Delivery
from pipeline.queueing import enqueue_deployment
from pipeline.settings import Settings
from pipeline.store import Store

log = logging.getLogger(__name__)

ALREADY_QUEUED = "this commit was already queued or deployed for this app"
TAG_ALREADY_QUEUED = "this release was already queued or deployed for this app"


def record(
    connection: redis.Redis,
    settings: Settings,
    config: Config,
    delivery: Delivery,
    decisions: list[Decision],
) -> dict[str, Any]:
    """Accept the delivery and queue each wanted decision; the per-app outcome, as JSON."""
    body: dict[str, Any] = {"delivery": delivery.delivery_id, "event": delivery.event}
    store = Store(connection)
    if any(d.queue for d in decisions) and not store.accept_delivery(delivery.delivery_id):
        body["duplicate"] = True
        reason = "this delivery id was accepted before; a redelivery queues nothing"
        body["apps"] = [_ignored(d.app, reason) for d in decisions]
        return body
    apps = []
    try:
        for decision in decisions:
            apps.append(_act(connection, settings, config, delivery, decision))
    except redis.RedisError:
        # Let GitHub's redelivery try again rather than answer a duplicate next time.
        try:
            store.forget_delivery(delivery.delivery_id)
        except redis.RedisError:
            log.warning("delivery %s: could not forget the id", delivery.delivery_id)
        raise
    body["apps"] = apps
    return body


def _ignored(app: str, reason: str, **extra: str) -> dict[str, Any]:
    return {"app": app, "status": "ignored", "reason": reason, **extra}


def _act(
    connection: redis.Redis,
    settings: Settings,
    config: Config,
    delivery: Delivery,
    decision: Decision,
) -> dict[str, Any]:
    if not decision.queue:
        return _ignored(decision.app, decision.reason)
    assert decision.ref is not None
    app = config.apps[decision.app]
    trigger = f"delivery:{delivery.delivery_id}"
    # A release carries no commit: its deployment is queued with the tag alone (see above).
    outcome = queue_commit(
        connection, settings, app, decision.commit or "", decision.ref, trigger, decision.claim
    )
    if outcome["status"] == "queued":
        outcome["reason"] = decision.reason
    return outcome


def queue_commit(
    connection: redis.Redis,
    settings: Settings,
    app: App,
    commit: str,
    ref: str,
    trigger: str,
    claim: str | None = None,
) -> dict[str, Any]:
    """Claim (app, commit) and enqueue its deployment; a second claim queues nothing.

    With `commit` empty (a release), the claim is `claim` (the release and its tag) and the
    deploy job resolves the commit, claiming that in turn.
    """
    store = Store(connection)
    work = commit or claim or ref
    # The id is chosen before the claim so that the claim names it from the start: two
    # round trips in all on this hot path (the claim, then one MULTI for the enqueue).
    deployment_id = new_deployment_id()
    if not store.claim_work(app.name, work, deployment_id):
        earlier = store.claimed_by(app.name, work) or ""
        if commit:
            return _ignored(app.name, ALREADY_QUEUED, commit=commit, deployment=earlier)
        return _ignored(app.name, TAG_ALREADY_QUEUED, ref=ref, deployment=earlier)
    try:
        deployment = enqueue_deployment(
            connection, settings.queue_name, app, commit, ref, trigger, deployment_id
        )
    except redis.RedisError:
        _release_quietly(store, app.name, work)
        raise
    fields = log_fields(app.name, deployment.id, trigger)
    log.info("%s: queued %s (%s) as %s", trigger, app.name, work, deployment.id, extra=fields)
    queued = {"app": app.name, "status": "queued", "deployment": deployment.id}
    return queued | ({"commit": commit} if commit else {"ref": ref})


def _release_quietly(store: Store, app: str, work: str) -> None:
    try:
        store.release_claim(app, work)
    except redis.RedisError:
        log.warning("%s: could not release the claim on %s", app, work)
