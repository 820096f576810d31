"""The walking skeleton on the real engine: a signed push ends as a new version behind Traefik.

A local bare repository plays GitHub; the receiver runs in-process; a real `nephelios worker`
process builds and deploys; a Traefik of the tests' own routes by Host header.
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import docker
import pytest
import redis

from pipeline.core.deployment import Deployment
from pipeline.store import Store
from tests.appmodel_support import app_entry, write_config
from tests.conftest import TEST_DOMAIN
from tests.support import (
    GitRepo,
    delivery_headers,
    encode,
    push_payload,
    wait_until,
    webhook_receiver,
)

pytestmark = pytest.mark.docker
SECRET = "e2e-secret"


def fetch(port: int, host: str) -> str:
    """The body Traefik serves for `host`, or "" while nothing answers."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310 - loopback
            return str(response.read().decode())
    except (urllib.error.URLError, OSError):
        return ""


def finished(store: Store, deployment_id: str) -> Deployment | None:
    deployment = store.get(deployment_id)
    return deployment if deployment is not None and deployment.finished else None


def test_push_to_live_then_push_again(
    tmp_path: Path,
    edge: int,
    redis_conn: redis.Redis,
    worker: subprocess.Popen[bytes],
    worker_env: dict[str, str],
    cleanup_stack: str,
    docker_client: docker.DockerClient,
) -> None:
    app = cleanup_stack
    repo = GitRepo(tmp_path / "github")
    config_path = Path(worker_env["NEPHELIOS_CONFIG"])
    write_config(config_path, edge, {app: app_entry(repo)})
    queue = worker_env["NEPHELIOS_QUEUE"]
    receiver = webhook_receiver(
        config_path, redis_conn, SECRET, queue, state_dir=tmp_path / "receiver"
    )
    store = Store(redis_conn)
    host = f"{app}.{TEST_DOMAIN}"

    for version in ("v1", "v2"):
        commit = repo.commit({"index.html": f"<h1>{version}</h1>\n"}, f"release {version}")
        body = encode(push_payload("acme/site", commit))
        response = receiver.post(
            "/webhooks/github", content=body, headers=delivery_headers(body, SECRET)
        )
        assert response.status_code == 202, response.text
        deployment_id = response.json()["apps"][0]["deployment"]

        served = f"<h1>{version}</h1>"
        wait_until(lambda: served in fetch(edge, host), 180, f"{host} to serve {served}")  # noqa: B023
        deployment = wait_until(lambda: finished(store, deployment_id), 60, "the record")  # noqa: B023
        assert deployment.status == "succeeded", deployment.error
        service = docker_client.api.inspect_service(f"{app}_web")
        image = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        assert image.split("@")[0] == f"{app}:{commit[:12]}"
