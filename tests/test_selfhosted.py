"""Nephelios running as a Swarm stack (deploy/) takes a signed push end to end.

deploy/build-image.sh makes the images locally; deploy/nephelios-stack.yml and
deploy/nephelios-admin.yml run two receivers behind the tests' Traefik, one worker and Redis.
The secrets are Docker secrets of the test's own, which `docker service inspect` must not
show. The test reaches the receivers only through Traefik, as GitHub would, and the pushed
app comes up behind the same Traefik.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

from tests.conftest import EDGE_NETWORK, TEST_DOMAIN
from tests.support import (
    GitRepo,
    delivery_headers,
    encode,
    push_payload,
    remove_stack,
    wait_until,
)
from tests.test_e2e import fetch
from tests.test_ops import samples

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[1]


def call(port: int, host: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, str]:
    """(status, body) of a request through Traefik; (0, "") while nothing answers."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body or None,
        headers={"Host": host, **headers},
        method="POST" if body else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


class SelfHosted:
    """Nephelios as a stack of the test's own, routed at `domain` by the tests' Traefik.

    Its image, Docker secrets, router and stack are named after `name`, unique to the test
    run, so that suites running side by side on one engine touch none of each other's."""

    def __init__(self, name: str, config_dir: Path) -> None:
        self.name = name
        self.config_dir = config_dir
        self.domain = f"{name}.{TEST_DOMAIN}"
        self.image = f"nephelios/nephelios:{name}"
        self.webhook_secret = secrets.token_hex(16)
        self.admin_token = secrets.token_hex(16)
        self.secret_names = [f"{name}_webhook_secret", f"{name}_admin_token"]
        self.env = {
            **os.environ,
            "NEPHELIOS_IMAGE": self.image,
            "NEPHELIOS_WEBHOOK_SECRET_NAME": self.secret_names[0],
            "NEPHELIOS_ADMIN_TOKEN_NAME": self.secret_names[1],
            "NEPHELIOS_CONFIG_DIR": str(config_dir),
            "NEPHELIOS_DOMAIN": self.domain,
            "NEPHELIOS_ROUTER": name,
            "NEPHELIOS_EDGE_NETWORK": EDGE_NETWORK,
            "NEPHELIOS_WORKERS": "1",
        }

    def build(self) -> None:
        argv = [str(ROOT / "deploy" / "build-image.sh")]
        subprocess.run(argv, env=self.env, check=True, timeout=300)

    def create_secrets(self, client: docker.DockerClient) -> None:
        # With the trailing newline that `docker secret create NAME FILE` keeps from `echo`.
        for name, value in zip(
            self.secret_names, [self.webhook_secret, self.admin_token], strict=True
        ):
            client.secrets.create(name=name, data=f"{value}\n".encode())

    def deploy(self) -> None:
        argv = ["docker", "stack", "deploy", "--resolve-image", "never", "--detach=true"]
        for stack_file in ["nephelios-stack.yml", "nephelios-admin.yml"]:
            argv += ["-c", str(ROOT / "deploy" / stack_file)]
        subprocess.run(
            [*argv, self.name], env=self.env, check=True, capture_output=True, timeout=120
        )

    def inspect(self, service: str) -> str:
        argv = ["docker", "service", "inspect", f"{self.name}_{service}"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout

    def worker_log(self) -> str:
        argv = ["docker", "service", "logs", "--raw", "--tail", "30", f"{self.name}_worker"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return result.stdout + result.stderr

    def remove(self, client: docker.DockerClient) -> None:
        """Everything the stack made; secrets and image only once no service holds them."""
        in_stack = remove_stack(client, self.name, timeout_s=90)
        for volume in client.volumes.list(filters=in_stack):
            volume.remove(force=True)
        for secret in client.secrets.list():
            if secret.name in self.secret_names:
                secret.remove()
        if client.images.list(name=self.image):
            client.images.remove(self.image)


@pytest.fixture
def self_hosted(
    tmp_path: Path, app_name: str, edge: int, docker_client: docker.DockerClient
) -> Iterator[SelfHosted]:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    stack = SelfHosted(f"nephelios-{app_name}", config_dir)
    try:
        stack.build()
        stack.create_secrets(docker_client)
        yield stack
    finally:
        stack.remove(docker_client)


def test_the_self_hosted_stack_takes_a_signed_push_to_live(
    self_hosted: SelfHosted, edge: int, cleanup_stack: str
) -> None:
    app = cleanup_stack
    repo = GitRepo(self_hosted.config_dir / "github")
    platform = {"domain": TEST_DOMAIN, "edge_network": EDGE_NETWORK, "http_port": edge}
    apps = {app: {"repo": "acme/selfhosted", "port": 8080, "git_url": str(repo.bare)}}
    config = yaml.safe_dump({"platform": platform, "apps": apps})
    (self_hosted.config_dir / "nephelios.yml").write_text(config)
    self_hosted.deploy()
    domain = self_hosted.domain
    wait_until(lambda: call(edge, domain, "/health")[0] == 200, 120, f"{domain}/health")

    # The receivers read both secrets from /run/secrets; no service spec holds a value.
    receiver, worker = self_hosted.inspect("receiver"), self_hosted.inspect("worker")
    for value in [self_hosted.webhook_secret, self_hosted.admin_token]:
        assert value not in receiver + worker
    assert all(name in receiver for name in self_hosted.secret_names)
    assert "NEPHELIOS_ADMIN_TOKEN_FILE=/run/secrets/admin_token" in receiver
    bearer = f"Bearer {self_hosted.admin_token}"
    assert call(edge, domain, "/apps", Authorization=bearer)[0] == 200
    assert call(edge, domain, "/apps", Authorization="Bearer wrong")[0] == 401

    commit = repo.commit({"index.html": "<h1>self-hosted</h1>\n"}, "release")
    body = encode(push_payload("acme/selfhosted", commit))
    signed = delivery_headers(body, self_hosted.webhook_secret)
    status, text = call(edge, domain, "/webhooks/github", body, **signed)
    assert status == 202, text
    assert yaml.safe_load(text)["apps"][0]["status"] == "queued"

    host = f"{app}.{TEST_DOMAIN}"

    def outcome(status: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return ("nephelios_deployments_total", (("app", app), ("status", status)))

    def finished() -> str:
        counted = samples(call(edge, domain, "/metrics")[1])
        return (
            "succeeded"
            if counted.get(outcome("succeeded"))
            else ("failed" if counted.get(outcome("failed")) else "")
        )

    result = wait_until(finished, 180, "the deployment to finish")
    assert result == "succeeded", self_hosted.worker_log()
    wait_until(lambda: "<h1>self-hosted</h1>" in fetch(edge, host), 30, f"{host} to serve")


def test_the_github_token_override_reaches_only_the_workers(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "NEPHELIOS_CONFIG_DIR": str(tmp_path),
        "NEPHELIOS_DOMAIN": "deploy.test",
        "NEPHELIOS_GITHUB_TOKEN_NAME": "token-of-this-test",
    }
    files = ["nephelios-stack.yml", "nephelios-github.yml"]
    argv = ["docker", "stack", "config", *(arg for f in files for arg in ("-c", f"deploy/{f}"))]
    merged = yaml.safe_load(
        subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    )
    worker, receiver = merged["services"]["worker"], merged["services"]["receiver"]
    assert worker["environment"]["NEPHELIOS_GITHUB_TOKEN_FILE"] == "/run/secrets/github_token"
    assert [s["source"] for s in worker["secrets"]] == ["github_token"]
    assert merged["secrets"]["github_token"] == {"external": True, "name": "token-of-this-test"}
    # The receivers make no outgoing call: they are not given the token.
    assert "NEPHELIOS_GITHUB_TOKEN_FILE" not in receiver["environment"]
    assert "github_token" not in str(receiver.get("secrets", []))
