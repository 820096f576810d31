"""Nephelios running as a Swarm stack (deploy/) takes a signed push end to end.

deploy/build-image.sh makes the images locally; deploy/nephelios-stack.yml runs two
receivers behind the tests' Traefik, one worker and Redis. The test reaches the receivers
only through Traefik, as GitHub would, and the pushed app comes up behind the same Traefik.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

from pipeline import engine
from tests.conftest import EDGE_NETWORK, TEST_DOMAIN
from tests.support import GitRepo, delivery_headers, encode, push_payload, wait_until
from tests.test_e2e import fetch
from tests.test_ops import samples

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[1]
SECRET = "selfhosted-secret"


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
    """Nephelios as a stack of the test's own, routed at `domain` by the tests' Traefik."""

    def __init__(self, name: str, config_dir: Path) -> None:
        self.name = name
        self.config_dir = config_dir
        self.domain = f"{name}.{TEST_DOMAIN}"
        self.env = {
            **os.environ,
            "NEPHELIOS_WEBHOOK_SECRET": SECRET,
            "NEPHELIOS_CONFIG_DIR": str(config_dir),
            "NEPHELIOS_DOMAIN": self.domain,
            "NEPHELIOS_ROUTER": name,
            "NEPHELIOS_EDGE_NETWORK": EDGE_NETWORK,
            "NEPHELIOS_WORKERS": "1",
        }

    def deploy(self) -> None:
        argv = ["docker", "stack", "deploy", "--resolve-image", "never", "--detach=true"]
        argv += ["-c", str(ROOT / "deploy" / "nephelios-stack.yml"), self.name]
        subprocess.run(argv, env=self.env, check=True, capture_output=True, timeout=120)

    def worker_log(self) -> str:
        argv = ["docker", "service", "logs", "--raw", "--tail", "30", f"{self.name}_worker"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return result.stdout + result.stderr


@pytest.fixture
def self_hosted(
    tmp_path: Path, app_name: str, edge: int, docker_client: docker.DockerClient
) -> Iterator[SelfHosted]:
    subprocess.run([str(ROOT / "deploy" / "build-image.sh")], check=True, timeout=300)
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    stack = SelfHosted(f"nephelios-{app_name}", config_dir)
    yield stack
    engine.stack_rm(stack.name)
    in_stack = {"label": f"com.docker.stack.namespace={stack.name}"}
    wait_until(
        lambda: not docker_client.api.containers(all=True, filters=in_stack),
        90,
        f"the {stack.name} containers to go",
    )
    for volume in docker_client.volumes.list(filters=in_stack):
        volume.remove(force=True)


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

    commit = repo.commit({"index.html": "<h1>self-hosted</h1>\n"}, "release")
    body = encode(push_payload("acme/selfhosted", commit))
    status, text = call(edge, domain, "/webhooks/github", body, **delivery_headers(body, SECRET))
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
