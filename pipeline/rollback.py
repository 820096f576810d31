"""The RQ rollback job: put an app back on an image it ran before, without building.

A rollback is a deployment record like any other (trigger `api:rollback`), whose `image` is
set when it is queued: the tag of an earlier succeeded deployment that is still on the
engine (`pipeline.admin.rollback_target`). The job renders the stack file for that image,
runs `docker stack deploy` and watches the rollout exactly as a deploy does; only the fetch
and the build are skipped. Job arguments are the deployment id alone, as for deploys.
"""

from __future__ import annotations

import logging

import redis
from rq import Queue, get_current_job

from pipeline import engine
from pipeline.apps import load_full_config
from pipeline.core import deployment as states
from pipeline.core.admin import ROLLBACK_TRIGGER
from pipeline.core.config import App
from pipeline.core.deployment import Deployment, new_deployment_id
from pipeline.errors import DeployError
from pipeline.jobs import ROLLOUT_TIMEOUT_S, Context, go_live
from pipeline.settings import Settings
from pipeline.store import Store

log = logging.getLogger(__name__)

ROLLBACK_JOB_TIMEOUT_S = ROLLOUT_TIMEOUT_S + 120


def enqueue_rollback(
    connection: redis.Redis, queue_name: str, app: App, target: Deployment
) -> Deployment:
    deployment = Deployment(
        id=new_deployment_id(),
        app=app.name,
        commit=target.commit,
        ref=f"rollback to {target.id}",
        trigger=ROLLBACK_TRIGGER,
        image=target.image,
    )
    Store(connection).create(deployment)
    Queue(queue_name, connection=connection).enqueue(
        "pipeline.rollback.rollback",
        deployment.id,
        job_id=f"rollback-{deployment.id}",
        job_timeout=ROLLBACK_JOB_TIMEOUT_S,
        result_ttl=24 * 3600,
        failure_ttl=7 * 24 * 3600,
        description=f"rollback {app.name} to {deployment.short_commit}",
    )
    return deployment


def rollback(deployment_id: str) -> str:
    """RQ entry point; returns the deployment's final status."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("pipeline.rollback.rollback must run inside an RQ job")
    settings = Settings.from_env()
    store = Store(job.connection)
    deployment = store.get(deployment_id)
    if deployment is None:
        log.error("rollback %s: no record; nothing to do", deployment_id)
        return "missing"
    config = load_full_config(settings)
    app = config.apps.get(deployment.app)
    if app is None:
        deployment.move(states.FAILED, f"app {deployment.app!r} is no longer configured")
        store.save(deployment)
        return deployment.status
    ctx = Context(settings, config, store, deployment, app, engine.client())
    try:
        release(ctx, deployment.image)
    except DeployError as exc:
        ctx.move(states.FAILED, str(exc))
    except BaseException:
        ctx.move(states.FAILED, "internal error; see the worker log")
        raise
    return deployment.status


def release(ctx: Context, tag: str) -> None:
    # The same stack as a deploy of that commit (secrets, processes, labels), without a build.
    ctx.move(states.DEPLOYING)
    ctx.log(f"rolling back to {tag}; no build")
    go_live(ctx, tag)
