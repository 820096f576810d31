"""Helpers for the worker tests: a fake GitHub statuses API, workers to start and kill, a site.

The fake API listens on an ephemeral port of 127.0.0.1 and records every request it gets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
import yaml

from pipeline.core.deployment import Deployment
from pipeline.store import Store
from tests.appmodel_support import app_entry, write_config
from tests.conftest import TEST_DOMAIN
from tests.support import (
    GitRepo,
    delivery_headers,
    encode,
    http_server,
    push_payload,
    wait_until,
    webhook_receiver,
)

SECRET = "worker-test-secret"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeGitHub:
    """A statuses API of the test's own; `seen` lists the requests in arrival order."""

    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v3"

    def statuses(self, commit: str) -> list[str]:
        return [s.body["state"] for s in self.seen if s.path.endswith(f"/statuses/{commit}")]


def fake_github() -> Iterator[FakeGitHub]:
    seen: list[Seen] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            seen.append(Seen("POST", self.path, dict(self.headers.items()), body))
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_server(Handler) as server:
        yield FakeGitHub(server, seen)


class Workers:
    """`nephelios worker` processes for one test; all are stopped at the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "webhooks.cli", "--log-level", "debug", "worker"],
            env=self.env,
        )
        self.processes.append(process)
        return process

    def horse_of(self, process: subprocess.Popen[bytes]) -> int | None:
        """The pid of the work horse RQ forked for the current job, if any."""
        path = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        try:
            children = path.read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def kill_hard(self, process: subprocess.Popen[bytes], horse: int) -> None:
        """SIGKILL the worker and its work horse, as an OOM kill or a crash would."""
        os.kill(horse, signal.SIGKILL)
        process.kill()
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Site:
    """One app: its GitHub stand-in repository, its nephelios.yml entry and a receiver."""

    def __init__(
        self,
        tmp_path: Path,
        name: str,
        edge_port: int,
        config_path: Path,
        queue_name: str,
        connection: redis.Redis,
    ) -> None:
        self.name = name
        self.repo = GitRepo(tmp_path / f"github-{name}")
        self.edge_port = edge_port
        self.config_path = config_path
        self.queue_name = queue_name
        self.connection = connection
        self.store = Store(connection)
        self.host = f"{name}.{TEST_DOMAIN}"
        self.configure()

    def configure(self, keep_images: int = 3, registry: str | None = None, **app: Any) -> None:
        platform: dict[str, Any] = {"keep_images": keep_images}
        if registry:
            platform["registry"] = registry
        entry = app_entry(self.repo, **app)
        write_config(self.config_path, self.edge_port, {self.name: entry}, **platform)
        self.receiver = webhook_receiver(self.config_path, self.connection, SECRET, self.queue_name)

    def push(self, commit: str) -> str:
        """Deliver a signed push of `commit`; return the deployment id."""
        body = encode(push_payload("acme/site", commit))
        response = self.receiver.post(
            "/webhooks/github", content=body, headers=delivery_headers(body, SECRET)
        )
        assert response.status_code == 202, response.text
        return str(response.json()["apps"][0]["deployment"])

    def served(self) -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.edge_port}/", headers={"Host": self.host}
        )
        try:
            with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310 - loopback
                return str(response.read().decode())
        except (urllib.error.URLError, OSError) as exc:
            # Not a page, but saying why shows in a failed assertion (502, refused, timeout).
            return f"no answer: {exc}"

    def finished(self, deployment_id: str) -> Deployment | None:
        deployment = self.store.get(deployment_id)
        return deployment if deployment is not None and deployment.finished else None


def page(version: str) -> dict[str, str]:
    return {"index.html": f"<h1>{version}</h1>\n"}


HTTPD = '["httpd", "-f", "-p", "8080", "-h", "/www"]'


def dockerfile(*lines: str, cmd: str = HTTPD) -> dict[str, str]:
    """A repository with its own Dockerfile on the local busybox image, serving /www."""
    text = "\n".join(
        ["FROM nephelios/busybox:local", "COPY index.html /www/index.html", *lines, f"CMD {cmd}"]
    )
    return {"Dockerfile": text + "\n"}


def registry_server(root: Path, port: int) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1:`port` (Docker trusts 127.0.0.0/8 over HTTP)."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "registry.yml"
    address = f"127.0.0.1:{port}"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
                "http": {"addr": address},
            }
        )
    )
    process = subprocess.Popen(["docker-registry", "serve", str(config)])
    try:
        wait_until(lambda: _answers(f"http://{address}/v2/"), 30, "the registry to answer")
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def registry_tags(address: str, repository: str) -> list[str]:
    url = f"http://{address}/v2/{repository}/tags/list"
    with urllib.request.urlopen(url, timeout=5) as response:
        return list(json.loads(response.read())["tags"])
