"""Turning the decisions about one delivery into queued work, each piece exactly once.

`record` runs in the request: Redis writes only, no git, Docker or network call. It marks
the delivery id as accepted, claims each (app, commit) so that the same commit is never
queued twice for an app whatever the delivery ids, and enqueues one deployment per claim.
When Redis fails half-way, the claims that produced nothing and the delivery id are undone
and the error goes up, so the receiver answers 503 and GitHub's redelivery finishes the job.

A release names a tag, not a commit. `resolve_release` is a small RQ job that asks the
repository which commit the tag points at (in a worker, never in the request) and then
queues that commit through the same claim.
"""

from __future__ import annotations

import logging
from typing import Any

import git
import redis
from rq import Queue, get_current_job

from pipeline.apps import load_full_config
from pipeline.core.config import App, Config
from pipeline.core.deployment import log_fields, new_deployment_id
from pipeline.core.github import SHA_RE, Decision, Delivery
from pipeline.errors import FetchError
from pipeline.queueing import enqueue_deployment
from pipeline.settings import Settings
from pipeline.store import Store

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT_S = 120
ALREADY_QUEUED = "this commit was already queued or deployed for this app"


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
    if decision.commit is None:
        return _queue_release(connection, settings, app, decision.ref, trigger)
    outcome = queue_commit(connection, settings, app, decision.commit, decision.ref, trigger)
    if outcome["status"] == "queued":
        outcome["reason"] = decision.reason
    return outcome


def queue_commit(
    connection: redis.Redis, settings: Settings, app: App, commit: str, ref: str, trigger: str
) -> dict[str, Any]:
    """Claim (app, commit) and enqueue its deployment; a second claim queues nothing."""
    store = Store(connection)
    # The id is chosen before the claim so that the claim names it from the start: two
    # round trips in all on this hot path (the claim, then one MULTI for the enqueue).
    deployment_id = new_deployment_id()
    if not store.claim_work(app.name, commit, deployment_id):
        earlier = store.claimed_by(app.name, commit)
        return _ignored(app.name, ALREADY_QUEUED, commit=commit, deployment=earlier or "")
    try:
        deployment = enqueue_deployment(
            connection, settings.queue_name, app, commit, ref, trigger, deployment_id
        )
    except redis.RedisError:
        _release_quietly(store, app.name, commit)
        raise
    fields = log_fields(app.name, deployment.id, trigger)
    log.info(
        "%s: queued %s (%s) as %s", trigger, app.name, commit[:12], deployment.id, extra=fields
    )
    return {"app": app.name, "status": "queued", "deployment": deployment.id, "commit": commit}


def _queue_release(
    connection: redis.Redis, settings: Settings, app: App, ref: str, trigger: str
) -> dict[str, Any]:
    store = Store(connection)
    if not store.claim_work(app.name, ref):
        return _ignored(app.name, f"{ref} was already queued for this app", ref=ref)
    try:
        job = Queue(settings.queue_name, connection=connection).enqueue(
            "pipeline.intake.resolve_release",
            app.name,
            ref,
            trigger,
            job_timeout=RESOLVE_TIMEOUT_S,
            result_ttl=24 * 3600,
            failure_ttl=7 * 24 * 3600,
            description=f"resolve {app.name} {ref}",
        )
    except redis.RedisError:
        _release_quietly(store, app.name, ref)
        raise
    log.info("%s: resolving %s of %s in job %s", trigger, ref, app.name, job.id)
    return {
        "app": app.name,
        "status": "queued",
        "ref": ref,
        "job": job.id,
        "reason": "a worker resolves the tag to its commit, then queues the deployment",
    }


def _release_quietly(store: Store, app: str, work: str) -> None:
    try:
        store.release_claim(app, work)
    except redis.RedisError:
        log.warning("%s: could not release the claim on %s", app, work)


def resolve_release(app_name: str, ref: str, trigger: str) -> dict[str, Any]:
    """RQ entry point: find the commit `ref` (refs/tags/<tag>) names and queue it once."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("pipeline.intake.resolve_release must run inside an RQ job")
    settings = Settings.from_env()
    config = load_full_config(settings)  # apps made by the admin API have releases too
    app = config.apps.get(app_name)
    if app is None:
        raise FetchError(f"app {app_name!r} is no longer configured")
    commit = tagged_commit(app.clone_url(config.platform), ref)
    outcome = queue_commit(job.connection, settings, app, commit, ref, trigger)
    log.info("%s: %s of %s is %s: %s", trigger, ref, app_name, commit[:12], outcome["status"])
    return outcome


def tagged_commit(url: str, ref: str) -> str:
    """The commit a tag points at, peeling annotated tags, asked of the remote repository."""
    if url.startswith("-") or not ref.startswith("refs/tags/"):
        raise FetchError(f"refusing to resolve {ref!r}")
    try:
        listing = str(git.cmd.Git().ls_remote(url, ref, f"{ref}^{{}}"))
    except git.GitCommandError as exc:
        raise FetchError(f"git ls-remote for {ref} failed (exit {exc.status})") from exc
    found: dict[str, str] = {}
    for line in listing.splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    # An annotated tag is listed twice; the peeled line (`^{}`) names the commit itself.
    commit = found.get(f"{ref}^{{}}") or found.get(ref)
    if commit is None or not SHA_RE.match(commit):
        raise FetchError(f"{ref} is not in the repository")
    return commit
