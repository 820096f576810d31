"""Putting deployments on the RQ queue: one record and one job per deployment.

Job arguments are only the deployment id; everything else is read from the record and the
config when the job runs, so nothing secret is ever written into RQ's job hashes.
"""

from __future__ import annotations

import redis
from rq import Queue

from pipeline.core.config import App
from pipeline.core.deployment import Deployment, new_deployment_id
from pipeline.store import Store

# The deploy job watches a rollout after the build; leave it room beyond the build budget.
ROLLOUT_BUDGET_S = 600


def enqueue_deployment(
    connection: redis.Redis, queue_name: str, app: App, commit: str, ref: str, trigger: str
) -> Deployment:
    """Record a queued deployment and enqueue its job; raises redis errors to the caller."""
    deployment = Deployment(
        id=new_deployment_id(), app=app.name, commit=commit, ref=ref, trigger=trigger
    )
    Store(connection).create(deployment)
    queue = Queue(queue_name, connection=connection)
    queue.enqueue(
        "pipeline.jobs.deploy",
        deployment.id,
        job_id=f"deploy-{deployment.id}",
        job_timeout=app.build_timeout_s + ROLLOUT_BUDGET_S,
        result_ttl=24 * 3600,
        failure_ttl=7 * 24 * 3600,
        description=f"deploy {app.name} {deployment.short_commit}",
    )
    return deployment
