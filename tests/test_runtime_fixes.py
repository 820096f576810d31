"""Runtime defects found by a hostile tester, each pinned on the real engine or in-process.

Remove during a deploy, deploying an app scaled to 0, user values in errors, placeholder
repositories of local apps, broken stored apps, and what `/remove` leaves behind.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
from starlette.testclient import TestClient

from pipeline import appdata
from pipeline.core.config import App, Config, Platform
from pipeline.core.deployment import Deployment, new_deployment_id
from pipeline.jobs import Context
from pipeline.reporting import Reporter
from pipeline.settings import Settings
from pipeline.store import Store
from tests.appmodel_support import admin_client, app_entry, deploy, write_config
from tests.support import GitRepo, remove_app, wait_until

TOKEN = "runtime-fixes-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def record(client: TestClient, deployment_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/deployments/{deployment_id}", headers=AUTH).json()
    return body


@pytest.mark.docker
def test_remove_during_a_deploy_leaves_nothing_deployed(
    tmp_path: Path,
    edge: int,
    redis_conn: redis.Redis,
    worker: subprocess.Popen[bytes],
    worker_env: dict[str, str],
    cleanup_stack: str,
    docker_client: docker.DockerClient,
) -> None:
    app = cleanup_stack
    client, _ = admin_client(worker_env, redis_conn, edge, TOKEN)
    repo = GitRepo(tmp_path / "github")
    repo.commit({"index.html": "<h1>v1</h1>\n"}, "v1")
    deployment_id = create_static(client, app, repo)
    wait_until(
        lambda: record(client, deployment_id)["status"] in ("building", "deploying"),
        60,
        "the first deployment to be under way",
    )

    removed = client.post("/remove", json={"app_name": app}, headers=AUTH)

    assert removed.status_code == 200, removed.text
    assert record(client, deployment_id)["finished"]  # remove waited for the running deploy
    in_stack = {"label": f"com.docker.stack.namespace={app}"}
    assert docker_client.api.services(filters=in_stack) == []
    assert client.post("/remove", json={"app_name": app}, headers=AUTH).status_code == 404


@pytest.mark.docker
def test_remove_fails_the_queued_deployments_of_the_app(
    tmp_path: Path,
    edge: int,
    redis_conn: redis.Redis,
    worker_env: dict[str, str],
    cleanup_stack: str,
    docker_client: docker.DockerClient,
) -> None:
    app = cleanup_stack  # no worker runs: the deployment stays queued until remove
    client, _ = admin_client(worker_env, redis_conn, edge, TOKEN)
    repo = GitRepo(tmp_path / "github")
    repo.commit({"index.html": "<h1>v1</h1>\n"}, "v1")
    secret = docker_client.secrets.create(
        name=f"{app}_token_0", data=b"s3cr3t", labels={appdata.APP_LABEL: app}
    )
    deployment_id = create_static(client, app, repo)

    removed = client.post("/remove", json={"app_name": app}, headers=AUTH)

    assert removed.status_code == 200, removed.text
    assert removed.json()["cancelled"] == [deployment_id]
    assert record(client, deployment_id)["status"] == "failed"
    assert "app removed" in record(client, deployment_id)["error"]
    assert removed.json()["secrets"] == [secret.name]  # nothing could delete them later
    assert docker_client.secrets.list(filters={"label": f"{appdata.APP_LABEL}={app}"}) == []


def create_static(client: TestClient, app: str, repo: GitRepo) -> str:
    """POST /create for a static app of `repo` on port 8080; the first deployment's id."""
    body = {"app_name": app, "app_type": "static", "github_url": str(repo.bare), "port": 8080}
    created = client.post("/create", json=body, headers=AUTH)
    assert created.status_code == 202, created.text
    return str(created.json()["deployment"])


def finished(client: TestClient, deployment_id: str) -> dict[str, Any] | None:
    body = record(client, deployment_id)
    return body if body["finished"] else None


@pytest.mark.docker
def test_deploying_an_app_scaled_to_zero_succeeds_without_waiting_for_an_update(
    tmp_path: Path,
    edge: int,
    redis_conn: redis.Redis,
    worker: subprocess.Popen[bytes],
    worker_env: dict[str, str],
    cleanup_stack: str,
    docker_client: docker.DockerClient,
) -> None:
    app = cleanup_stack
    client, _ = admin_client(worker_env, redis_conn, edge, TOKEN)
    repo = GitRepo(tmp_path / "github")
    repo.commit({"index.html": "<h1>v1</h1>\n"}, "v1")
    first = create_static(client, app, repo)
    assert wait_until(lambda: finished(client, first), 120, "first deploy")["status"] == "succeeded"
    scaled = client.post("/scale", json={"app_name": app, "replicas": 0}, headers=AUTH)
    assert scaled.status_code == 200, scaled.text

    v2 = repo.commit({"index.html": "<h1>v2</h1>\n"}, "v2")
    second = client.post(f"/apps/{app}/deploy", json={}, headers=AUTH).json()["deployment"]

    # Well under the 300 s rollout timeout the old judgement ran into.
    done = wait_until(lambda: finished(client, second), 90, "deploy of an app scaled to 0")
    assert done["status"] == "succeeded", done["error"]
    spec = docker_client.api.inspect_service(f"{app}_web")["Spec"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 0
    assert spec["Labels"]["nephelios.commit"] == v2


@pytest.mark.docker
def test_env_values_never_reach_the_record_the_log_or_the_worker_log(
    tmp_path: Path,
    redis_conn: redis.Redis,
    docker_client: docker.DockerClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App(name="site", repo="acme/site", env={"DB_PASSWORD": "pa$$word-42"})
    config = Config(platform=Platform(), apps={"site": app})
    store = Store(redis_conn)
    deployment = Deployment(id=new_deployment_id(), app="site", commit="c" * 40, ref="", trigger="")
    store.create(deployment)
    settings = Settings(state_dir=tmp_path)
    ctx = Context(
        settings, config, store, deployment, app, docker_client, Reporter.from_settings(settings)
    )

    # What the Docker CLI says when it quotes the stack file back.
    ctx.log('environment: {"DB_PASSWORD": "pa$$$$word-42"}')
    with caplog.at_level(logging.INFO, logger="pipeline.jobs"):
        ctx.move("failed", "docker stack deploy failed: bad value pa$$word-42")

    saved = store.get(deployment.id)
    assert saved is not None
    assert saved.error == "docker stack deploy failed: bad value ***"
    assert "word-42" not in " ".join(store.read_log(deployment.id))
    assert "word-42" not in caplog.text and "bad value ***" in caplog.text


@pytest.mark.docker
def test_a_failed_first_stack_deploy_leaves_no_half_made_stack(
    tmp_path: Path,
    edge: int,
    redis_conn: redis.Redis,
    worker: subprocess.Popen[bytes],
    worker_env: dict[str, str],
    app_name: str,
    docker_client: docker.DockerClient,
) -> None:
    # `web` is created first; the 50-character app's process service name is over Swarm's 63.
    app = (app_name + "x" * 50)[:50]
    repo = GitRepo(tmp_path / "github")
    commit = repo.commit({"index.html": "v1\n"})
    long_name = {"zz-long-process-name": {"command": ["httpd", "-f", "-p", "8081"]}}
    entry = app_entry(repo, processes=long_name)
    write_config(Path(worker_env["NEPHELIOS_CONFIG"]), edge, {app: entry})
    try:
        done = deploy(redis_conn, worker_env, app, commit)

        assert done.status == "failed"
        assert "63 characters" in done.error
        in_stack = {"label": f"com.docker.stack.namespace={app}"}
        wait_until(lambda: not docker_client.api.services(filters=in_stack), 30, "stack gone")
    finally:
        remove_app(docker_client, app)
