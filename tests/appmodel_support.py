"""Helpers for the tests on the real engine: write the test app's nephelios.yml, deploy
through a real worker, ask Traefik from outside, look inside containers, and clean up every
app a test made."""

from __future__ import annotations

import http.client
import ssl
import subprocess
from pathlib import Path
from typing import Any

import docker
import redis
import yaml
from starlette.testclient import TestClient

from pipeline.core.config import load_config
from pipeline.core.deployment import Deployment
from pipeline.queueing import enqueue_deployment
from pipeline.settings import Settings
from pipeline.store import Store
from tests.conftest import EDGE_NETWORK, TEST_DOMAIN
from tests.support import GitRepo, admin_app, wait_until


def write_config(path: Path, edge_port: int, apps: dict[str, Any], **platform: Any) -> None:
    """A nephelios.yml whose apps are served by the tests' Traefik on `edge_port`."""
    base = {"domain": TEST_DOMAIN, "edge_network": EDGE_NETWORK, "http_port": edge_port}
    path.write_text(yaml.safe_dump({"platform": {**base, **platform}, "apps": apps}))


def app_entry(source: GitRepo, **keys: Any) -> dict[str, Any]:
    """An app of acme/site on port 8080, fetched from the local `source`, with `keys` on top."""
    return {"repo": "acme/site", "port": 8080, "git_url": str(source.bare), **keys}


def admin_client(
    env: dict[str, str], connection: redis.Redis, edge_port: int, token: str
) -> tuple[TestClient, Settings]:
    """The admin API over a nephelios.yml without apps, for the worker of `env`."""
    write_config(Path(env["NEPHELIOS_CONFIG"]), edge_port, {})
    app, settings = admin_app(env, connection, token)
    return TestClient(app), settings


def deploy(
    connection: redis.Redis, env: dict[str, str], app: str, commit: str, timeout_s: float = 180
) -> Deployment:
    """Queue a deployment of `commit` for the worker of `env`; wait until it finishes."""
    config = load_config(env["NEPHELIOS_CONFIG"])
    queued = enqueue_deployment(
        connection, env["NEPHELIOS_QUEUE"], config.apps[app], commit, "refs/heads/main", "test"
    )
    return wait_finished(connection, queued.id, timeout_s)


def wait_finished(connection: redis.Redis, deployment_id: str, timeout_s: float) -> Deployment:
    store = Store(connection)

    def finished() -> Deployment | None:
        record = store.get(deployment_id)
        return record if record is not None and record.finished else None

    return wait_until(finished, timeout_s, f"deployment {deployment_id} to finish")


def request(
    port: int, host: str, path: str = "/", tls: bool = False
) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) of one request through Traefik; (0, "", {}) while it refuses."""
    connection: http.client.HTTPConnection
    if tls:
        # No certificate can be fetched here, so Traefik serves its default self-signed one.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=3, context=context)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    except OSError:
        return 0, "", {}
    finally:
        connection.close()


def body(port: int, host: str, path: str = "/") -> str:
    status, text, _ = request(port, host, path)
    return text if status == 200 else ""


def service_spec(client: docker.DockerClient, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = client.api.inspect_service(name)["Spec"]
    return spec


def running_container(client: docker.DockerClient, service: str, image: str) -> str:
    """The id of a running container of `service` that runs `image` (a tag)."""

    def find() -> str | None:
        for task in client.api.tasks(filters={"service": service, "desired-state": "running"}):
            status = task.get("Status", {})
            spec_image = task["Spec"]["ContainerSpec"]["Image"].split("@")[0]
            if status.get("State") == "running" and spec_image == image:
                return str(status["ContainerStatus"]["ContainerID"])
        return None

    return wait_until(find, 60, f"a running task of {service} on {image}")


def docker_exec(container: str, *argv: str) -> str:
    result = subprocess.run(
        ["docker", "exec", container, *argv], capture_output=True, text=True, check=True
    )
    return result.stdout
