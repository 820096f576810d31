"""The admin API in-process, against a real Redis: every refusal is the right 4xx, one line.

No Docker engine is needed: each call here is refused before it would reach Swarm, or (create,
redeploy) only reads a local git repository and writes Redis and the state directory.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from starlette.testclient import TestClient

from pipeline.apps import AppFile, load_full_config
from pipeline.core.config import load_config
from pipeline.settings import Settings
from pipeline.store import Store
from tests.support import GitRepo, admin_app, delivery_headers, encode, push_payload
from webhooks.app import create_app

pytestmark = pytest.mark.redis
TOKEN = "admin-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def setup(
    tmp_path: Path, redis_conn: redis.Redis, worker_env: dict[str, str]
) -> Iterator[dict[str, Any]]:
    repo = GitRepo(tmp_path / "github")
    commit = repo.commit({"index.html": "<h1>v1</h1>\n"})
    Path(worker_env["NEPHELIOS_CONFIG"]).write_text(
        yaml.safe_dump(
            {
                # No GitHub here: owner/name URLs resolve to a directory that does not exist.
                "platform": {"domain": "test.localhost", "git_base_url": f"file://{tmp_path}/gh"},
                "apps": {"declared": {"repo": "acme/declared"}},
            }
        )
    )
    app, settings = admin_app(worker_env, redis_conn, TOKEN, max_replicas=5)
    client = TestClient(app)
    yield {"client": client, "repo": repo, "commit": commit, "settings": settings}
    client.close()


def refused(response: Any, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert "\n" not in error
    assert words in error, error


def test_token_missing_wrong_or_unconfigured(
    setup: dict[str, Any], redis_conn: redis.Redis
) -> None:
    client: TestClient = setup["client"]
    refused(client.get("/apps"), 401, "missing")
    assert client.get("/apps").headers["www-authenticate"] == "Bearer"
    refused(client.get("/apps", headers={"Authorization": "Bearer nope"}), 401, "wrong")
    refused(client.get("/apps", headers={"Authorization": f"Basic {TOKEN}"}), 401, "missing")
    refused(client.post("/scale", json={"app_name": "declared", "replicas": 1}), 401, "missing")

    settings = Settings(config_path=setup["settings"].config_path, admin_token="")
    closed = TestClient(create_app(settings, load_config(settings.config_path), redis_conn))
    refused(closed.get("/apps", headers=AUTH), 403, "NEPHELIOS_ADMIN_TOKEN is not set (nor")
    assert closed.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("not json", "not valid JSON"),
        ([1, 2], "JSON object"),
        ({"github_url": "acme/x"}, "app_name: required"),
        ({"app_name": "Bad_Name", "github_url": "acme/x"}, "DNS label"),
        ({"app_name": "-x", "github_url": "acme/x"}, "DNS label"),
        ({"app_name": "a" * 51, "github_url": "acme/x"}, "DNS label"),
        ({"app_name": "nephelios", "github_url": "acme/x"}, "reserved"),
        ({"app_name": "ok"}, "github_url: required"),
        ({"app_name": "ok", "github_url": "ftp://x/y"}, "github_url: expected"),
        ({"app_name": "ok", "github_url": "acme/x", "app_type": "rust"}, "app_type:"),
        ({"app_name": "ok", "github_url": "acme/x", "port": 0}, "port:"),
        ({"app_name": "ok", "github_url": "acme/x", "replicas": 6}, "NEPHELIOS_MAX_REPLICAS"),
        ({"app_name": "ok", "github_url": "acme/x", "replicas": True}, "replicas:"),
        ({"app_name": "ok", "github_url": "acme/x", "branch": "rel/*"}, "not a pattern"),
        ({"app_name": "ok", "github_url": "acme/x", "domains": ["a b"]}, "domains[0]"),
        ({"app_name": "ok", "github_url": "acme/x", "env": {"1X": "s"}}, "env."),
        ({"app_name": "ok", "github_url": "acme/x", "colour": "red"}, "unknown key 'colour'"),
    ],
)
def test_create_refuses_bad_bodies(setup: dict[str, Any], body: Any, words: str) -> None:
    client: TestClient = setup["client"]
    content = body if isinstance(body, str) else json.dumps(body)
    refused(client.post("/create", content=content, headers=AUTH), 400, words)
    assert not setup["settings"].apps_file.exists()


def test_create_refuses_secret_env_value_in_reason(setup: dict[str, Any]) -> None:
    body = {"app_name": "ok", "github_url": "acme/x", "env": {"TOKEN": {"nested": "s3cret"}}}
    response = setup["client"].post("/create", json=body, headers=AUTH)
    refused(response, 400, "env.TOKEN")
    assert "s3cret" not in response.text


def test_create_stores_durably_and_queues_the_branch_head(
    setup: dict[str, Any], redis_conn: redis.Redis
) -> None:
    client: TestClient = setup["client"]
    settings: Settings = setup["settings"]
    body = {
        "app_name": "site",
        "app_type": "static",
        "github_url": str(setup["repo"].bare),
        "port": 8080,
        "env": {"API_KEY": "s3cret"},
    }
    response = client.post("/create", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    assert response.json()["commit"] == setup["commit"]
    deployment = Store(redis_conn).get(response.json()["deployment"])
    assert deployment is not None
    assert (deployment.commit, deployment.trigger) == (setup["commit"], "api:create")

    assert stat.S_IMODE(os.stat(settings.apps_file).st_mode) == 0o600
    app = load_full_config(settings).apps["site"]  # what a worker sees, from the file alone
    assert (app.port, app.env["API_KEY"], app.git_url) == (8080, "s3cret", str(setup["repo"].bare))

    refused(client.post("/create", json=body, headers=AUTH), 409, "exists already")
    declared = {"app_name": "declared", "github_url": "acme/x"}
    refused(client.post("/create", json=declared, headers=AUTH), 409, "exists already")

    redis_conn.flushdb()  # Redis lost everything, and Nephelios restarts: the app is still there
    client = TestClient(create_app(settings, load_config(settings.config_path), redis_conn))
    shown = client.get("/apps", headers=AUTH)
    assert shown.status_code == 200
    assert "s3cret" not in shown.text
    site = next(a for a in shown.json()["apps"] if a["app_name"] == "site")
    assert (site["source"], site["env"]) == ("api", ["API_KEY"])


def test_create_of_a_missing_repository_or_branch_stores_nothing(setup: dict[str, Any]) -> None:
    client: TestClient = setup["client"]
    body = {"app_name": "ghost", "github_url": "acme/ghost"}
    refused(client.post("/create", json=body, headers=AUTH), 422, "cannot read the repository")
    body = {"app_name": "ghost", "github_url": str(setup["repo"].bare), "branch": "nope"}
    refused(client.post("/create", json=body, headers=AUTH), 422, "no branch or tag 'nope'")
    assert AppFile(setup["settings"].apps_file).read() == {}


def test_unknown_apps_and_deployments_are_404(setup: dict[str, Any]) -> None:
    client: TestClient = setup["client"]
    refused(client.get("/apps/nope", headers=AUTH), 404, "no app named 'nope'")
    refused(client.get("/apps/NOPE", headers=AUTH), 404, "no app named")
    refused(client.post("/apps/nope/deploy", headers=AUTH), 404, "no app")
    refused(client.post("/apps/nope/rollback", headers=AUTH), 404, "no app")
    refused(client.post("/remove", json={"app_name": "nope"}, headers=AUTH), 404, "no app")
    refused(client.post("/scale", json={"app_name": "nope", "replicas": 1}, headers=AUTH), 404, "")
    refused(client.get("/deployments/0123", headers=AUTH), 404, "no deployment")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"app_name": "declared"}, "replicas: required"),
        ({"app_name": "declared", "replicas": -1}, "from 0 to 5"),
        ({"app_name": "declared", "replicas": 6}, "NEPHELIOS_MAX_REPLICAS"),
        ({"app_name": "declared", "replicas": "2"}, "replicas:"),
        ({"replicas": 1}, "app_name: required"),
    ],
)
def test_scale_refuses_bad_bodies(setup: dict[str, Any], body: Any, words: str) -> None:
    refused(setup["client"].post("/scale", json=body, headers=AUTH), 400, words)


def test_redeploy_checks_its_body_and_resolves_refs(
    setup: dict[str, Any], redis_conn: redis.Redis
) -> None:
    client: TestClient = setup["client"]
    refused(client.post("/apps/declared/deploy", json={"commit": "abc"}, headers=AUTH), 400, "40")
    refused(client.post("/apps/declared/deploy", json={"ref": "a..b"}, headers=AUTH), 400, "ref")
    both = {"ref": "main", "commit": "a" * 40}
    refused(client.post("/apps/declared/deploy", json=both, headers=AUTH), 400, "not both")
    response = client.post("/apps/declared/deploy", json={"commit": "A" * 40}, headers=AUTH)
    assert response.status_code == 202, response.text
    assert response.json()["commit"] == "a" * 40
    followed = client.get(f"/deployments/{response.json()['deployment']}", headers=AUTH)
    assert followed.json()["status"] == "queued"
    assert followed.json()["next_offset"] == 0
    refused(client.post("/apps/declared/rollback", headers=AUTH), 409, "not deployed")


def test_openapi_describes_every_admin_call(setup: dict[str, Any]) -> None:
    paths = setup["client"].get("/openapi.json").json()["paths"]
    assert {"/create", "/remove", "/scale", "/apps", "/apps/{name}", "/deployments/{id}"} <= set(
        paths
    )
    assert "post" in paths["/apps/{name}/rollback"]


def test_a_created_app_deploys_on_push(
    tmp_path: Path, setup: dict[str, Any], redis_conn: redis.Redis
) -> None:
    github = GitRepo(tmp_path / "gh-work")  # played by git_base_url: <tmp>/gh/acme/site.git
    commit = github.commit({"index.html": "hi\n"})
    (tmp_path / "gh" / "acme").mkdir(parents=True)
    github.bare.rename(tmp_path / "gh" / "acme" / "site.git")
    client: TestClient = setup["client"]
    response = client.post(
        "/create", json={"app_name": "site", "github_url": "acme/site"}, headers=AUTH
    )
    assert response.status_code == 202, response.text
    assert response.json()["commit"] == commit

    settings = replace(setup["settings"], webhook_secret="s")
    receiver = TestClient(create_app(settings, load_config(settings.config_path), redis_conn))
    body = encode(push_payload("acme/site", "b" * 40))
    pushed = receiver.post("/webhooks/github", content=body, headers=delivery_headers(body, "s"))
    assert pushed.status_code == 202, pushed.text
    assert [(a["app"], a["status"]) for a in pushed.json()["apps"]] == [("site", "queued")]


def test_a_local_path_that_is_no_repository_gets_a_readable_reason(
    setup: dict[str, Any],
) -> None:
    body = {"app_name": "etc", "app_type": "static", "github_url": "/etc"}
    response = setup["client"].post("/create", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json() == {
        "error": "cannot read the repository: '/etc' does not appear to be a git repository"
    }


def test_a_broken_stored_app_is_a_one_line_error_not_a_traceback(
    setup: dict[str, Any], redis_conn: redis.Redis
) -> None:
    settings: Settings = setup["settings"]
    settings.apps_file.parent.mkdir(parents=True, exist_ok=True)
    broken = {"broken": {"repo": "acme/x", "replicas": "many", "env": {"K": "s3cret-value"}}}
    settings.apps_file.write_text(json.dumps({"version": 1, "apps": broken}))

    response = setup["client"].get("/apps", headers=AUTH)

    assert response.status_code == 500
    error = response.json()["error"]
    assert "apps.broken.replicas" in error and "\n" not in error
    assert "s3cret-value" not in response.text and "Traceback" not in response.text

    webhook_settings = replace(settings, webhook_secret="s")
    receiver = TestClient(
        create_app(webhook_settings, load_config(settings.config_path), redis_conn)
    )
    body = encode(push_payload("acme/x", "b" * 40))
    pushed = receiver.post("/webhooks/github", content=body, headers=delivery_headers(body, "s"))
    assert pushed.status_code == 500
    assert "apps.broken.replicas" in pushed.json()["error"] and "s3cret" not in pushed.text


# --- fixconfig: a domain belongs to one app --------------------------------------------------


def test_create_refuses_a_domain_another_app_answers(setup: dict[str, Any]) -> None:
    body = {
        "app_name": "thief",
        "github_url": str(setup["repo"].bare),
        "domains": ["declared.test.localhost"],
    }
    refused(setup["client"].post("/create", json=body, headers=AUTH), 409, "app 'declared'")
    assert not setup["settings"].apps_file.exists()
