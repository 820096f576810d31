"""Rolling an app back to an image it ran before, without building.

A rollback is a deployment record like any other (trigger `api:rollback`) whose `image` is
set when it is queued: the tag of an earlier succeeded deployment that is still on the
engine (`pipeline.admin.rollback_target`). It joins the app's waiting list like a push, so
it takes the app's lock and never runs beside a deploy of the same app; the deploy job sees
the image and skips the fetch and the build (`pipeline.jobs.run`). Being an explicit request,
it is exempt from the stale rules, and a later push supersedes it as usual.
"""

from __future__ import annotations

import redis

from pipeline.core.admin import ROLLBACK_TRIGGER
from pipeline.core.config import App
from pipeline.core.deployment import Deployment, new_deployment_id
from pipeline.queueing import enqueue_record


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
    enqueue_record(connection, queue_name, app, deployment)
    return deployment
