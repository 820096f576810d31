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
import yaml
from starlette.testclient import TestClient

from pipeline.core.config import load_config
from pipeline.core.deployment import Deployment
from pipeline.settings import Settings
from pipeline.store import Store
from tests.conftest import EDGE_NETWORK, TEST_DOMAIN
from tests.support import GitRepo, delivery_headers, encode, push_payload, wait_until
from webhooks.app import create_app

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
    config_path.write_text(
        yaml.safe_dump(
            {
                "platform": {
                    "domain": TEST_DOMAIN,
                    "edge_network": EDGE_NETWORK,
                    "http_port": edge,
                },
                "apps": {app: {"repo": "acme/site", "port": 8080, "git_url": str(repo.bare)}},
            }
        )
    )
    settings = Settings(
        webhook_secret=SECRET,
        queue_name=worker_env["NEPHELIOS_QUEUE"],
        state_dir=tmp_path / "receiver",
    )
    receiver = TestClient(create_app(settings, load_config(config_path), redis_conn))
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
