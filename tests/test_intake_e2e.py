"""A published release goes live on the real engine: the deploy job resolves the tag, then builds.

The branch moves on after the tag, so the test shows that the tagged commit is what runs,
not the branch tip.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from pipeline.store import Store
from tests.appmodel_support import app_entry, write_config
from tests.conftest import TEST_DOMAIN
from tests.support import (
    GitRepo,
    delivery_headers,
    encode,
    push_tag,
    release_payload,
    wait_until,
    webhook_receiver,
)
from tests.test_e2e import fetch, finished

pytestmark = pytest.mark.docker
SECRET = "e2e-release-secret"


def test_published_release_deploys_the_tagged_commit(
    tmp_path: Path,
    edge: int,
    redis_conn: redis.Redis,
    worker: subprocess.Popen[bytes],
    worker_env: dict[str, str],
    cleanup_stack: str,
) -> None:
    app = cleanup_stack
    repo = GitRepo(tmp_path / "github")
    tagged = repo.commit({"index.html": "<h1>release 1.0.0</h1>\n"}, "release 1.0.0")
    push_tag(repo, "1.0.0", "first release")
    repo.commit({"index.html": "<h1>unreleased work</h1>\n"}, "work after the release")
    config_path = Path(worker_env["NEPHELIOS_CONFIG"])
    write_config(config_path, edge, {app: app_entry(repo, repo="acme/tool", releases=True)})
    queue = worker_env["NEPHELIOS_QUEUE"]
    receiver = webhook_receiver(
        config_path, redis_conn, SECRET, queue, state_dir=tmp_path / "receiver"
    )

    body = encode(release_payload("acme/tool", "published", "1.0.0"))
    headers = delivery_headers(body, SECRET, event="release")
    response = receiver.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 202, response.text
    queued = response.json()["apps"][0]
    assert (queued["status"], queued["ref"]) == ("queued", "refs/tags/1.0.0")

    host = f"{app}.{TEST_DOMAIN}"
    wait_until(lambda: "release 1.0.0" in fetch(edge, host), 180, f"{host} to serve 1.0.0")
    store = Store(redis_conn)
    deployment = wait_until(lambda: finished(store, queued["deployment"]), 60, "the record")
    assert deployment.status == "succeeded", deployment.error
    assert (deployment.commit, deployment.ref) == (tagged, "refs/tags/1.0.0")
