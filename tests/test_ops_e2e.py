"""Operating a real deployment: after a signed push goes live, /metrics has moved, the
notification sink got the notice, and the worker's JSON log follows the deployment.

A local bare repository plays GitHub; the receiver runs in-process; a real `nephelios worker`
(with `--log-format json`) builds and deploys onto the local swarm behind the test Traefik.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml
from starlette.testclient import TestClient

from pipeline.core.config import load_config
from pipeline.metrics import PHASES
from pipeline.settings import Settings
from pipeline.store import Store
from tests.conftest import EDGE_NETWORK, TEST_DOMAIN
from tests.support import GitRepo, delivery_headers, encode, push_payload, wait_until
from tests.test_e2e import fetch, finished
from tests.test_ops import Sink, samples
from webhooks.app import create_app

pytestmark = pytest.mark.docker
SECRET = "ops-e2e-secret"


@pytest.fixture
def json_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Path]:
    """A `nephelios worker --log-format json`; yields the file its log goes to."""
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "webhooks.cli", "--log-format", "json", "worker"],
            env=worker_env,
            stderr=log_file,
            stdout=log_file,
        )
        yield log_path
        process.terminate()
        process.wait(timeout=30)


def test_a_deploy_moves_metrics_sends_a_notice_and_logs_each_phase(
    tmp_path: Path,
    edge: int,
    redis_conn: redis.Redis,
    worker_env: dict[str, str],
    json_worker: Path,
    cleanup_stack: str,
    ops_port: Callable[[int], int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = cleanup_stack
    caplog.set_level(logging.INFO, logger="pipeline.intake")
    sink = Sink(ops_port(50))
    repo = GitRepo(tmp_path / "github")
    config_path = Path(worker_env["NEPHELIOS_CONFIG"])
    platform = {"domain": TEST_DOMAIN, "edge_network": EDGE_NETWORK, "http_port": edge}
    platform["notify"] = [f"{sink.url}/hook/secret-part"]
    app_config = {"repo": "acme/ops", "port": 8080, "git_url": str(repo.bare)}
    config_path.write_text(yaml.safe_dump({"platform": platform, "apps": {app: app_config}}))
    settings = Settings(
        webhook_secret=SECRET, queue_name=worker_env["NEPHELIOS_QUEUE"], state_dir=tmp_path / "r"
    )
    receiver = TestClient(create_app(settings, load_config(config_path), redis_conn))

    commit = repo.commit({"index.html": "<h1>ops</h1>\n"}, "release")
    body = encode(push_payload("acme/ops", commit))
    response = receiver.post(
        "/webhooks/github", content=body, headers=delivery_headers(body, SECRET, delivery="gh-77")
    )
    assert response.status_code == 202, response.text
    deployment_id = response.json()["apps"][0]["deployment"]
    queued = [r for r in caplog.records if getattr(r, "deployment", "") == deployment_id]
    assert [(r.app, r.delivery) for r in queued] == [(app, "gh-77")]  # type: ignore[attr-defined]
    wait_until(lambda: "<h1>ops</h1>" in fetch(edge, f"{app}.{TEST_DOMAIN}"), 180, "the app")
    store = Store(redis_conn)
    deployment = wait_until(lambda: finished(store, deployment_id), 60, "the record")
    assert deployment.status == "succeeded", deployment.error

    found = samples(receiver.get("/metrics").text)
    assert found[("nephelios_deployments_total", (("app", app), ("status", "succeeded")))] == 1
    assert found[("nephelios_deliveries_total", (("event", "push"), ("outcome", "queued")))] == 1
    for phase in PHASES:
        assert found[("nephelios_phase_duration_seconds_count", (("phase", phase),))] == 1
    assert found[("nephelios_queue_depth", ())] == 0

    [(path, notice)] = wait_until(lambda: sink.received, 10, "the notice")
    assert path == "/hook/secret-part"
    assert f"{app}: {commit[:12]} succeeded" in str(notice["text"])
    sink.shutdown()
    sink.server_close()

    lines = [json.loads(line) for line in json_worker.read_text().splitlines() if line]
    ours = [line for line in lines if line.get("deployment") == deployment_id]
    assert {line["message"].split()[0] for line in ours} >= set(PHASES)
    assert all(line["app"] == app and line["delivery"] == "gh-77" for line in ours)
    assert "secret-part" not in json_worker.read_text()
