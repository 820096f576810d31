"""The webhook endpoint in-process, against a real Redis: what is answered and enqueued."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import redis
from rq import Queue
from starlette.testclient import TestClient

from pipeline.core.config import parse_config
from pipeline.settings import Settings
from pipeline.store import Store
from tests.support import delivery_headers, encode, push_payload, redelivered
from webhooks.app import connect_redis, create_app

SECRET = "test-webhook-secret"
SHA = "b" * 40
CONFIG = parse_config(
    {"apps": {"site": {"repo": "acme/site"}, "docs": {"repo": "acme/site", "branch": "docs"}}}
)


@pytest.fixture
def client(redis_conn: redis.Redis, queue_name: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(webhook_secret=SECRET, queue_name=queue_name, state_dir=tmp_path)
    with TestClient(create_app(settings, CONFIG, redis_conn)) as test_client:
        yield test_client


def post(client: TestClient, payload: dict, event: str = "push", **kw: str):  # type: ignore[no-untyped-def,type-arg]
    body = encode(payload)
    headers = delivery_headers(body, kw.pop("secret", SECRET), event, kw.pop("delivery", None))
    headers.update(kw)
    return client.post("/webhooks/github", content=body, headers=headers)


def test_push_enqueues_one_job_per_matching_app(
    client: TestClient, redis_conn: redis.Redis, queue_name: str
) -> None:
    response = post(client, push_payload("acme/site", SHA))
    assert response.status_code == 202
    apps = {a["app"]: a for a in response.json()["apps"]}
    assert apps["site"]["status"] == "queued"
    assert apps["docs"]["status"] == "ignored"
    deployment = Store(redis_conn).get(apps["site"]["deployment"])
    assert deployment is not None
    assert (deployment.app, deployment.commit, deployment.status) == ("site", SHA, "queued")
    jobs = Queue(queue_name, connection=redis_conn).jobs
    assert [job.args for job in jobs] == [(deployment.id,)]


def test_wrong_or_missing_signature_is_401_and_enqueues_nothing(
    client: TestClient, redis_conn: redis.Redis, queue_name: str
) -> None:
    assert post(client, push_payload("acme/site", SHA), secret="wrong").status_code == 401
    body = encode(push_payload("acme/site", SHA))
    headers = delivery_headers(body, SECRET)
    del headers["X-Hub-Signature-256"]
    response = client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 401
    assert Queue(queue_name, connection=redis_conn).count == 0
    # Only the delivery counters of /metrics may have been written.
    assert redis_conn.keys() == [b"nephelios:metrics:deliveries"]


def test_ping_is_answered(client: TestClient) -> None:
    response = post(client, {"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping")
    assert response.status_code == 200
    assert response.json()["pong"] is True


def test_redelivery_is_a_duplicate(
    client: TestClient, redis_conn: redis.Redis, queue_name: str
) -> None:
    redelivered(partial(post, client, push_payload("acme/site", SHA), delivery="same-id"))
    assert Queue(queue_name, connection=redis_conn).count == 1


def test_redis_down_answers_503(tmp_path: Path) -> None:
    settings = Settings(webhook_secret=SECRET, state_dir=tmp_path)
    dead = connect_redis("redis://127.0.0.1:1/0")
    with TestClient(create_app(settings, CONFIG, dead)) as test_client:
        response = post(test_client, push_payload("acme/site", SHA))
        assert response.status_code == 503
        assert test_client.get("/health").status_code == 503


@pytest.mark.docker
def test_health_answers(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "redis": "ok", "docker": "ok"}
