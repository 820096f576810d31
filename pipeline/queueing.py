"""Putting deployments on the RQ queue, one app at a time, and cleaning up after dead workers.

Every push records a deployment, appends its id to the app's waiting list and enqueues one
RQ job whose only argument is that id (nothing secret is ever written into RQ's job hashes).
A job does not build "its" deployment blindly: it tries to take the app's lock together
with everything waiting (`AppQueue.claim`); when another worker holds the app it returns at
once, and the holder, on letting go, enqueues a job for whatever arrived meanwhile. So a
burst becomes at most two builds, and different apps run in parallel on different workers.

The lock expires `LOCK_TTL_S` after its holder's last renewal (`LockKeeper`, a thread in the
work horse), so a worker killed with SIGKILL frees the app within that time; `reap`, run by
every worker between jobs and while it watches one, then fails the deployments it held as
abandoned and re-kicks apps whose waiting deployments have nobody coming for them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

import redis
from rq import Queue

from pipeline.core import deployment as states
from pipeline.core.config import App
from pipeline.core.deployment import Deployment, new_deployment_id
from pipeline.store import AppQueue, Store, apps_with_waiting, forget_running, running

log = logging.getLogger(__name__)

# The deploy job watches a rollout after the build; leave it room beyond the build budget.
ROLLOUT_BUDGET_S = 600
LOCK_TTL_S = 30
LOCK_RENEW_S = 5
# A waiting deployment with no job on its way (its enqueue failed, or its holder died) is
# kicked again at most this often.
KICK_EVERY_S = 60
ABANDONED = "abandoned: the worker running it stopped (killed or crashed) before it finished"


def enqueue_deployment(
    connection: redis.Redis,
    queue_name: str,
    app: App,
    commit: str,
    ref: str,
    trigger: str,
    deployment_id: str | None = None,
) -> Deployment:
    """Record a queued deployment and enqueue its job; raises redis errors to the caller."""
    deployment = Deployment(
        id=deployment_id or new_deployment_id(),
        app=app.name,
        commit=commit,
        ref=ref,
        trigger=trigger,
    )
    enqueue_record(connection, queue_name, app, deployment)
    return deployment


def enqueue_record(
    connection: redis.Redis, queue_name: str, app: App, deployment: Deployment
) -> None:
    """Save `deployment`, add it to the app's waiting list and enqueue a job for the app.

    The three go in one MULTI/EXEC: one round trip on the receiver's hot path, and never a
    record without its job (or the reverse).
    """
    with connection.pipeline() as pipe:
        pipe.multi()
        Store(connection).create(deployment, pipe)
        AppQueue(connection, app.name).add(deployment.id, pipe)
        enqueue_job(connection, queue_name, deployment.id, app.build_timeout_s, app.name, pipe)
        pipe.execute()


def enqueue_job(
    connection: redis.Redis,
    queue_name: str,
    deployment_id: str,
    build_timeout_s: int,
    app: str,
    pipe: redis.client.Pipeline | None = None,
) -> None:
    Queue(queue_name, connection=connection).enqueue(
        "pipeline.jobs.deploy",
        deployment_id,
        job_id=f"deploy-{deployment_id}-{new_deployment_id()[:6]}",
        # RQ's default of 180 s would kill ordinary builds; the app's budget replaces it.
        job_timeout=build_timeout_s + ROLLOUT_BUDGET_S,
        result_ttl=24 * 3600,
        failure_ttl=7 * 24 * 3600,
        description=f"deploy {app} ({deployment_id})",
        pipeline=pipe,
    )


class LockKeeper:
    """Renews an app's lock from a thread until closed; `lost` says whether it slipped away."""

    def __init__(self, app_queue: AppQueue, token: str) -> None:
        self.app_queue = app_queue
        self.token = token
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nephelios-lock", daemon=True)

    def __enter__(self) -> LockKeeper:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(LOCK_RENEW_S):
            try:
                if not self.app_queue.renew(self.token, LOCK_TTL_S):
                    self.lost = True
                    log.error("%s: lost the app lock %s", self.app_queue.app, self.token)
                    return
            except redis.RedisError as exc:
                # Keep trying: the lock lasts LOCK_TTL_S, several renewal periods.
                log.warning("%s: cannot renew the app lock: %s", self.app_queue.app, exc)


def reap(
    connection: redis.Redis,
    queue_name: str,
    build_timeout_s: Callable[[str], int],
    on_abandoned: Callable[[Deployment], None],
) -> list[str]:
    """Fail deployments whose worker died and kick apps left waiting; return the failed ids."""
    store = Store(connection)
    failed = []
    for deployment_id, (app, token) in running(connection).items():
        if AppQueue(connection, app).holder() == token:
            continue
        deployment = store.get(deployment_id)
        if deployment is not None and not deployment.finished:
            deployment.move(states.FAILED, ABANDONED)
            store.save(deployment)
            store.append_log(deployment_id, ABANDONED)
            log.warning("%s %s: %s", app, deployment_id, ABANDONED)
            on_abandoned(deployment)
            failed.append(deployment_id)
        forget_running(connection, deployment_id)

    for app in list(apps_with_waiting(connection)):
        app_queue = AppQueue(connection, app)
        waiting = app_queue.waiting()
        if waiting and app_queue.holder() is None and app_queue.first_kick(KICK_EVERY_S):
            log.info("%s: %d deployment(s) waiting and nobody on them; kicking", app, len(waiting))
            enqueue_job(connection, queue_name, waiting[-1], build_timeout_s(app), app)
    return failed
