"""The admin API on the real engine: create, scale, redeploy, roll back, remove.

A local bare repository plays GitHub; the API runs in-process; a real `nephelios worker`
process deploys, seeing the created app only through the state directory's app file; a
Traefik of the tests' own routes by Host header.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
from starlette.testclient import TestClient

from pipeline import engine
from tests.appmodel_support import admin_client
from tests.conftest import TEST_DOMAIN
from tests.support import GitRepo, wait_until
from tests.test_e2e import fetch

pytestmark = pytest.mark.docker
TOKEN = "admin-e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def finished(client: TestClient, deployment_id: str) -> dict[str, Any] | None:
    body: dict[str, Any] = client.get(f"/deployments/{deployment_id}", headers=AUTH).json()
    return body if body["finished"] else None


def succeeded(client: TestClient, response: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    deployment_id = response.json()["deployment"]
    record = wait_until(lambda: finished(client, deployment_id), 180, f"deployment {deployment_id}")
    assert record["status"] == "succeeded", (record["error"], record["log"][-5:])
    return record


def running_tasks(docker_client: docker.DockerClient, app: str) -> int:
    tasks = docker_client.api.tasks(filters={"service": f"{app}_web", "desired-state": "running"})
    return sum(1 for t in tasks if t["Status"]["State"] == "running")


def scale(client: TestClient, docker_client: docker.DockerClient, app: str, n: int) -> None:
    response = client.post("/scale", json={"app_name": app, "replicas": n}, headers=AUTH)
    assert response.status_code == 200, response.text
    wait_until(lambda: running_tasks(docker_client, app) == n, 60, f"{n} running tasks of {app}")


def test_create_scale_redeploy_rollback_remove(
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
    v1 = repo.commit({"index.html": "<h1>v1</h1>\n"}, "v1")
    client, settings = admin_client(worker_env, redis_conn, edge, TOKEN)
    host = f"{app}.{TEST_DOMAIN}"

    body = {"app_name": app, "app_type": "static", "github_url": str(repo.bare), "port": 8080}
    succeeded(client, client.post("/create", json=body, headers=AUTH))
    wait_until(lambda: "<h1>v1</h1>" in fetch(edge, host), 60, f"{host} to serve v1")
    shown = client.get(f"/apps/{app}", headers=AUTH).json()
    assert shown["live"]["commit"] == v1
    assert shown["live"]["urls"] == [f"http://{host}:{edge}/"]

    scale(client, docker_client, app, 3)
    scale(client, docker_client, app, 0)
    wait_until(lambda: "<h1>v1</h1>" not in fetch(edge, host), 60, f"{host} to stop answering")
    scale(client, docker_client, app, 1)
    wait_until(lambda: "<h1>v1</h1>" in fetch(edge, host), 60, f"{host} to answer again")
    scale(client, docker_client, app, 2)  # not the config's 1: the next deploy must keep it

    v2 = repo.commit({"index.html": "<h1>v2</h1>\n"}, "v2")
    built = succeeded(client, client.post(f"/apps/{app}/deploy", json={}, headers=AUTH))
    assert any("Step" in line for line in built["log"])  # a deploy's log shows its build
    wait_until(lambda: "<h1>v2</h1>" in fetch(edge, host), 60, f"{host} to serve v2")
    live = client.get(f"/apps/{app}", headers=AUTH).json()["live"]
    assert (live["commit"], live["replicas"]["desired"]) == (v2, 2)  # the scale survived

    images_before = {i.id for i in engine.app_images(docker_client, app)}
    record = succeeded(client, client.post(f"/apps/{app}/rollback", headers=AUTH))
    assert record["image"] == f"{app}:{v1[:12]}"
    assert not any("Step" in line for line in record["log"])  # no build ran
    wait_until(lambda: "<h1>v1</h1>" in fetch(edge, host), 60, f"{host} to serve v1 again")
    assert {i.id for i in engine.app_images(docker_client, app)} == images_before

    removed = client.post("/remove", json={"app_name": app}, headers=AUTH)
    assert removed.status_code == 200, removed.text
    in_stack = {"label": f"com.docker.stack.namespace={app}"}
    assert docker_client.api.services(filters=in_stack) == []
    assert docker_client.networks.list(filters=in_stack) == []
    assert engine.app_images(docker_client, app) == []
    assert client.get(f"/apps/{app}", headers=AUTH).status_code == 404
    assert app not in settings.apps_file.read_text()
