"""The app lock, the waiting list and the reaper against a real Redis."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis
from rq import Queue, SimpleWorker

from pipeline import admin, queueing
from pipeline.core.config import App
from pipeline.core.deployment import Deployment
from pipeline.rollback import enqueue_rollback
from pipeline.store import AppQueue, Store, running
from tests.support import wait_until

pytestmark = pytest.mark.redis

APP = App(name="web", repo="acme/web")


def enqueue(connection: redis.Redis, queue_name: str, commit: str) -> Deployment:
    return queueing.enqueue_deployment(
        connection, queue_name, APP, commit, "refs/heads/main", "delivery:x"
    )


def test_only_one_holder_takes_everything_waiting(redis_conn: redis.Redis, queue_name: str) -> None:
    first = enqueue(redis_conn, queue_name, "a" * 40)
    second = enqueue(redis_conn, queue_name, "b" * 40)
    assert Queue(queue_name, connection=redis_conn).count == 2
    app_queue = AppQueue(redis_conn, "web")

    assert app_queue.claim("token-1", 30) == [first.id, second.id]
    assert app_queue.claim("token-2", 30) == []  # nothing waits
    third = enqueue(redis_conn, queue_name, "c" * 40)
    assert app_queue.claim("token-2", 30) == []  # the app is busy
    assert app_queue.waiting() == [third.id]
    assert set(running(redis_conn)) == {first.id, second.id}

    assert not app_queue.renew("token-2", 30)
    assert app_queue.renew("token-1", 30)
    assert app_queue.release("token-2") == 1 and app_queue.holder() == "token-1"
    assert app_queue.release("token-1") == 1 and app_queue.holder() is None
    assert app_queue.claim("token-2", 30) == [third.id]


def test_a_lock_whose_holder_stopped_renewing_expires(redis_conn: redis.Redis) -> None:
    app_queue = AppQueue(redis_conn, "web")
    app_queue.add("d1")
    assert app_queue.claim("dead-worker", 0.3) == ["d1"]
    wait_until(lambda: app_queue.holder() is None, 5, "the lock to expire")


def test_reap_fails_abandoned_work_and_kicks_waiting_apps(
    redis_conn: redis.Redis, queue_name: str
) -> None:
    taken = enqueue(redis_conn, queue_name, "a" * 40)
    app_queue = AppQueue(redis_conn, "web")
    assert app_queue.claim("dead-worker", 0.2) == [taken.id]
    store = Store(redis_conn)
    taken.move("building")
    store.save(taken)
    later = enqueue(redis_conn, queue_name, "b" * 40)
    jobs_before = Queue(queue_name, connection=redis_conn).count

    # While the holder's lock lives, nothing is touched.
    reported: list[Deployment] = []
    assert queueing.reap(redis_conn, queue_name, lambda app: 60, reported.append) == []
    wait_until(lambda: app_queue.holder() is None, 5, "the lock to expire")

    assert queueing.reap(redis_conn, queue_name, lambda app: 60, reported.append) == [taken.id]
    record = store.get(taken.id)
    assert record is not None and record.status == "failed"
    assert record.error.startswith("abandoned")
    assert [h["status"] for h in record.history] == ["queued", "building", "failed"]
    assert [d.id for d in reported] == [taken.id]
    assert running(redis_conn) == {}
    queue = Queue(queue_name, connection=redis_conn)
    assert queue.count == jobs_before + 1
    assert queue.jobs[-1].args == (later.id,)
    # Kicks are rate-limited: a second sweep right away adds no job.
    queueing.reap(redis_conn, queue_name, lambda app: 60, reported.append)
    assert queue.count == jobs_before + 1


def test_job_timeout_follows_the_app_build_timeout(
    redis_conn: redis.Redis, queue_name: str
) -> None:
    enqueue(redis_conn, queue_name, "a" * 40)
    job = Queue(queue_name, connection=redis_conn).jobs[0]
    assert job.timeout == APP.build_timeout_s + queueing.ROLLOUT_BUDGET_S
    assert job.args == (job.args[0],) and len(job.args[0]) == 16  # only the deployment id


def test_a_rollback_waits_its_turn_in_the_apps_queue(
    redis_conn: redis.Redis, queue_name: str
) -> None:
    build = enqueue(redis_conn, queue_name, "a" * 40)
    app_queue = AppQueue(redis_conn, "web")
    assert app_queue.claim("deploying", 30) == [build.id]  # a worker holds the app

    earlier = succeeded_before("web:999999999999")
    back = enqueue_rollback(redis_conn, queue_name, APP, earlier)

    # Not run beside the deploy: it waits for the holder, as a push would.
    assert app_queue.claim("another", 30) == []
    assert app_queue.waiting() == [back.id]
    record = Store(redis_conn).get(back.id)
    assert record is not None
    assert (record.image, record.commit, record.trigger) == (
        earlier.image,
        earlier.commit,
        "api:rollback",
    )
    jobs = Queue(queue_name, connection=redis_conn).jobs
    assert [(j.func_name, j.args) for j in jobs][-1] == ("pipeline.jobs.deploy", (back.id,))


def test_a_worker_that_cannot_read_its_settings_fails_what_waits_with_the_reason(
    redis_conn: redis.Redis, queue_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The GitHub token's file was removed after the worker started: every job reads settings.
    monkeypatch.setenv("NEPHELIOS_GITHUB_TOKEN_FILE", str(tmp_path / "gone"))
    first = enqueue(redis_conn, queue_name, "a" * 40)
    second = enqueue(redis_conn, queue_name, "b" * 40)
    queue = Queue(queue_name, connection=redis_conn)
    SimpleWorker([queue], connection=redis_conn).work(burst=True)

    for queued in (first, second):
        record = Store(redis_conn).get(queued.id)
        assert record is not None and record.status == "failed"
        assert "NEPHELIOS_GITHUB_TOKEN_FILE: cannot read it" in record.error
    app_queue = AppQueue(redis_conn, "web")
    assert app_queue.waiting() == [] and app_queue.holder() is None
    assert running(redis_conn) == {}


@pytest.mark.docker
def test_a_rollback_whose_image_was_pruned_meanwhile_fails_saying_so(
    redis_conn: redis.Redis, queue_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "nephelios.yml"
    config.write_text("apps:\n  web: {repo: acme/web}\n")
    monkeypatch.setenv("NEPHELIOS_CONFIG", str(config))
    monkeypatch.setenv("NEPHELIOS_STATE_DIR", str(tmp_path / "state"))
    gone = succeeded_before("web:pruned000000")  # the target chosen when asked, since pruned
    back = enqueue_rollback(redis_conn, queue_name, APP, gone)
    SimpleWorker([Queue(queue_name, connection=redis_conn)], connection=redis_conn).work(burst=True)

    record = Store(redis_conn).get(back.id)
    assert record is not None and record.status == "failed"
    assert record.error == "image web:pruned000000 is no longer on the engine (pruned)"


def test_removal_fails_what_waits_at_once_even_while_a_deploy_runs(
    redis_conn: redis.Redis, queue_name: str
) -> None:
    deploying = enqueue(redis_conn, queue_name, "a" * 40)
    app_queue = AppQueue(redis_conn, "web")
    assert app_queue.claim("holder", 30) == [deploying.id]
    waiting = enqueue(redis_conn, queue_name, "b" * 40)
    result: dict[str, list[str]] = {}

    def remove() -> None:
        with admin.exclusive(redis_conn, "web", wait_s=20) as failed:
            result["failed"] = failed

    remover = threading.Thread(target=remove)
    remover.start()
    store = Store(redis_conn)
    wait_until(lambda: status(store, waiting.id) == "failed", 5, "the waiting one to fail")
    # Nothing is left for the holder to hand over to another worker while removal waits.
    assert remover.is_alive() and app_queue.waiting() == []
    app_queue.release("holder")
    remover.join(20)
    assert result["failed"] == [waiting.id]


def status(store: Store, deployment_id: str) -> str | None:
    found = store.get(deployment_id)
    return found.status if found is not None else None


def succeeded_before(image: str) -> Deployment:
    """An earlier deployment of the app whose image a rollback goes back to."""
    return Deployment(
        id="e1",
        app="web",
        commit="9" * 40,
        ref="refs/heads/main",
        trigger="delivery:y",
        image=image,
    )
