"""Operating Nephelios: /health, /metrics, notifications and log formats.

The receiver runs in-process against a real Redis (and, for /health, the real engine); the
notification sink is a real HTTP server on loopback.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from pipeline import metrics, notify
from pipeline.core.config import parse_config
from pipeline.core.deployment import FAILED, SUCCEEDED, Deployment
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from tests.support import RedisServer, delivery_headers, encode, push_payload
from webhooks.app import connect_redis, create_app
from webhooks.logs import JsonFormatter, TextFormatter

SECRET = "ops-secret"
SHA = "c" * 40
CONFIG = parse_config({"apps": {"site": {"repo": "acme/site"}}})


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def post(client: TestClient, payload: dict[str, object], event: str = "push", **kw: str) -> int:
    body = encode(payload)
    headers = delivery_headers(body, kw.pop("secret", SECRET), event, kw.pop("delivery", None))
    return client.post("/webhooks/github", content=body, headers=headers).status_code


@pytest.fixture
def client(redis_conn: redis.Redis, queue_name: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(webhook_secret=SECRET, queue_name=queue_name, state_dir=tmp_path)
    with TestClient(create_app(settings, CONFIG, redis_conn)) as test_client:
        yield test_client


# --- /health ----------------------------------------------------------------------------


@pytest.mark.docker
def test_health_is_503_naming_redis_once_redis_stops(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    settings = Settings(webhook_secret=SECRET, state_dir=tmp_path)
    app = create_app(settings, CONFIG, connect_redis(own_redis.url))
    with TestClient(app) as test_client:
        up = test_client.get("/health")
        assert (up.status_code, up.json()["redis"], up.json()["docker"]) == (200, "ok", "ok")

        own_redis.stop()
        down = test_client.get("/health")
        assert down.status_code == 503
        assert down.json()["redis"] == "down" and down.json()["docker"] == "ok"
        assert down.json()["error"] == "redis not answering"


@pytest.mark.redis
def test_health_is_503_naming_docker_when_the_engine_does_not_answer(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, ops_port: Callable[[int], int]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{ops_port(31)}")
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["docker"] == "down" and response.json()["redis"] == "ok"
    assert response.json()["error"] == "docker not answering"


# --- /metrics ---------------------------------------------------------------------------


@pytest.mark.redis
def test_metrics_count_deliveries_by_event_and_outcome(client: TestClient) -> None:
    assert post(client, push_payload("acme/site", SHA), delivery="d1") == 202
    assert post(client, push_payload("acme/site", SHA), delivery="d1") == 200
    assert post(client, push_payload("acme/other", SHA)) == 202
    # Another delivery of a commit queued already: accepted, but it queues nothing.
    assert post(client, push_payload("acme/site", SHA), delivery="d2") == 202
    assert post(client, {"zen": "hi", "hook_id": 1}, event="ping") == 200
    assert post(client, push_payload("acme/site", SHA), secret="wrong") == 401

    page = client.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    found = samples(page.text)

    def deliveries(event: str, outcome: str) -> float:
        key = (("event", event), ("outcome", outcome))
        return found.get(("nephelios_deliveries_total", key), 0.0)

    assert deliveries("push", "queued") == 1
    assert deliveries("push", "duplicate") == 1
    assert deliveries("push", "ignored") == 2
    assert deliveries("ping", "ping") == 1
    assert deliveries("unverified", "refused") == 1
    assert found[("nephelios_queue_depth", ())] == 1
    assert found[("nephelios_workers", (("state", "busy"),))] == 0


@pytest.mark.redis
def test_phase_histogram_and_deployment_counts_add_up_across_writers(
    client: TestClient, redis_conn: redis.Redis
) -> None:
    # Two connections stand for two worker processes writing to the same Redis.
    other = redis.Redis(connection_pool=redis_conn.connection_pool)
    for seconds, connection in ((0.1, redis_conn), (3.0, other), (4000.0, redis_conn)):
        metrics.observe_phase(connection, "build", seconds)
    metrics.count_deployment(redis_conn, "site", SUCCEEDED)
    metrics.count_deployment(other, "site", SUCCEEDED)
    metrics.count_deployment(other, "site", FAILED)

    found = samples(client.get("/metrics").text)
    build = (("phase", "build"),)
    assert found[("nephelios_phase_duration_seconds_bucket", (("le", "0.25"), *build))] == 1
    assert found[("nephelios_phase_duration_seconds_bucket", (("le", "5.0"), *build))] == 2
    assert found[("nephelios_phase_duration_seconds_bucket", (("le", "1800.0"), *build))] == 2
    assert found[("nephelios_phase_duration_seconds_bucket", (("le", "+Inf"), *build))] == 3
    assert found[("nephelios_phase_duration_seconds_count", build)] == 3
    assert found[("nephelios_phase_duration_seconds_sum", build)] == pytest.approx(4003.1)
    assert found[("nephelios_phase_duration_seconds_count", (("phase", "fetch"),))] == 0
    site = (("app", "site"),)
    assert found[("nephelios_deployments_total", (*site, ("status", "succeeded")))] == 2
    assert found[("nephelios_deployments_total", (*site, ("status", "failed")))] == 1


@pytest.mark.redis
def test_metrics_is_503_when_redis_is_down(tmp_path: Path, ops_port: Callable[[int], int]) -> None:
    settings = Settings(webhook_secret=SECRET, state_dir=tmp_path)
    dead = connect_redis(f"redis://127.0.0.1:{ops_port(32)}/0")
    with TestClient(create_app(settings, CONFIG, dead)) as test_client:
        assert test_client.get("/metrics").status_code == 503


# --- notifications ----------------------------------------------------------------------


class Sink(ThreadingHTTPServer):
    """A local HTTP server standing in for a Slack or Discord incoming webhook."""

    def __init__(self, port: int, status: int = 204) -> None:
        self.received: list[tuple[str, dict[str, object]]] = []
        self.status = status
        super().__init__(("127.0.0.1", port), SinkHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class SinkHandler(BaseHTTPRequestHandler):
    server: Sink

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.received.append((self.path, json.loads(self.rfile.read(length))))
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def sink(ops_port: Callable[[int], int]) -> Iterator[Sink]:
    server = Sink(ops_port(40))
    yield server
    server.shutdown()
    server.server_close()


def finished_deployment(status: str, error: str = "") -> Deployment:
    deployment = Deployment(
        id="0123456789abcdef", app="site", commit=SHA, ref="refs/heads/main", trigger="x"
    )
    deployment.move(status, error)
    return deployment


def test_notice_reaches_the_sink_and_a_dead_target_is_only_logged(
    sink: Sink, ops_port: Callable[[int], int], caplog: pytest.LogCaptureFixture
) -> None:
    dead_port = ops_port(41)
    dead = f"http://127.0.0.1:{dead_port}/services/T000/B000/very-secret-token"
    urls = [dead, f"{sink.url}/hooks/ok"]
    deployment = finished_deployment(SUCCEEDED)

    with caplog.at_level(logging.WARNING, logger="pipeline.notify"):
        delivered = notify.deployment_finished(urls, deployment, ["site.example.com"])

    assert delivered == 1
    [(path, body)] = sink.received
    assert path == "/hooks/ok"
    assert body["text"] == body["content"]
    assert body["text"] == (
        f"site: {SHA[:12]} succeeded - live at https://site.example.com/ "
        "(deployment 0123456789abcdef, refs/heads/main)"
    )
    assert f"notify http://127.0.0.1:{dead_port} failed" in caplog.text
    assert "very-secret-token" not in caplog.text


def test_failed_notice_carries_the_reason_and_a_refusing_target_counts_as_not_delivered(
    ops_port: Callable[[int], int],
) -> None:
    refusing = Sink(ops_port(42), status=404)
    try:
        deployment = finished_deployment(FAILED, "build failed: no such file")
        assert notify.deployment_finished([refusing.url], deployment) == 0
        [(_, body)] = refusing.received
        assert "site: cccccccccccc failed: build failed: no such file" in str(body["text"])
    finally:
        refusing.shutdown()
        refusing.server_close()


def test_notify_urls_are_validated_without_showing_the_token() -> None:
    config = parse_config({"platform": {"notify": "https://hooks.slack.com/services/T/B/x"}})
    assert config.platform.notify == ("https://hooks.slack.com/services/T/B/x",)
    with pytest.raises(ConfigError) as caught:
        parse_config({"platform": {"notify": ["ftp://files.example.com/secret-token"]}})
    assert caught.value.key == "platform.notify[0]"
    assert "secret-token" not in str(caught.value)


# --- log formats ------------------------------------------------------------------------


def record_with_fields() -> logging.LogRecord:
    record = logging.LogRecord(
        "pipeline.jobs", logging.INFO, __file__, 1, "%s done", ("build",), None
    )
    record.app, record.deployment, record.delivery = "site", "0123abcd", "gh-1"
    return record


def test_json_log_lines_carry_app_deployment_and_delivery() -> None:
    entry = json.loads(JsonFormatter().format(record_with_fields()))
    assert entry["message"] == "build done"
    assert (entry["app"], entry["deployment"], entry["delivery"]) == ("site", "0123abcd", "gh-1")
    assert entry["level"] == "info" and entry["logger"] == "pipeline.jobs"


def test_text_log_lines_end_with_the_fields() -> None:
    line = TextFormatter().format(record_with_fields())
    assert line.endswith("pipeline.jobs: build done app=site deployment=0123abcd delivery=gh-1")
