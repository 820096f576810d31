"""Test helpers: signed GitHub deliveries, local git repositories, waiting on conditions, the
receiver in-process, small HTTP servers of a test's own on loopback, and removing a test app
from the engine."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import docker
import redis
from starlette.applications import Starlette
from starlette.testclient import TestClient

from pipeline import engine
from pipeline.core.config import load_config
from pipeline.settings import Settings
from webhooks.app import create_app

T = TypeVar("T")

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Pusher",
    "GIT_AUTHOR_EMAIL": "pusher@example.com",
    "GIT_COMMITTER_NAME": "Test Pusher",
    "GIT_COMMITTER_EMAIL": "pusher@example.com",
}


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def push_payload(
    repository: str,
    after: str,
    ref: str = "refs/heads/main",
    message: str = "update",
    before: str = "0" * 40,
    added: tuple[str, ...] = (),
    modified: tuple[str, ...] = (),
    removed: tuple[str, ...] = (),
    deleted: bool = False,
) -> dict[str, Any]:
    """A push body shaped like GitHub's (see shared/github-payloads), trimmed to what matters."""
    owner, name = repository.split("/")
    commit = {
        "id": after,
        "message": message,
        "added": list(added),
        "modified": list(modified),
        "removed": list(removed),
    }
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "created": before == "0" * 40,
        "deleted": deleted,
        "forced": False,
        "base_ref": None,
        "commits": [] if deleted else [commit],
        "head_commit": None if deleted else commit,
        "repository": {
            "name": name,
            "full_name": repository,
            "owner": {"login": owner, "name": owner},
            "clone_url": f"https://github.com/{repository}.git",
            "default_branch": "main",
            "private": False,
        },
        "pusher": {"name": "pusher", "email": "pusher@example.com"},
    }


# --- intake builders: bodies shaped like shared/github-payloads, trimmed -------------------
def repository_fields(repository: str) -> dict[str, Any]:
    owner, name = repository.split("/")
    return {
        "id": 1296269,
        "name": name,
        "full_name": repository,
        "owner": {"login": owner, "type": "User"},
        "clone_url": f"https://github.com/{repository}.git",
        "default_branch": "main",
        "private": False,
    }


def tag_push_payload(repository: str, tag: str, tag_object: str, commit: str) -> dict[str, Any]:
    """An annotated tag push: `after` is the tag object, `head_commit.id` the tagged commit."""
    head = {"id": commit, "message": "Adding a .gitignore file", "added": [], "modified": []}
    return {
        "ref": f"refs/tags/{tag}",
        "before": "0" * 40,
        "after": tag_object,
        "created": True,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "commits": [],
        "head_commit": {**head, "removed": []},
        "repository": repository_fields(repository),
        "pusher": {"name": "pusher", "email": "pusher@example.com"},
    }


def release_payload(
    repository: str, action: str, tag: str, release_id: int = 17372790, prerelease: bool = False
) -> dict[str, Any]:
    return {
        "action": action,
        "release": {
            "id": release_id,
            "tag_name": tag,
            "target_commitish": "main",
            "name": tag,
            "draft": False,
            "prerelease": prerelease,
            "published_at": "2019-05-15T15:20:53Z",
        },
        "repository": repository_fields(repository),
        "sender": {"login": "Codertocat", "type": "User"},
    }


def ping_payload(repository: str | None = None) -> dict[str, Any]:
    """A repository hook's ping, or an organisation hook's (no `repository`) when None."""
    hook_type = "Repository" if repository else "Organization"
    body: dict[str, Any] = {
        "zen": "Anything added dilutes everything else.",
        "hook_id": 109948940,
        "hook": {
            "type": hook_type,
            "id": 109948940,
            "name": "web",
            "active": True,
            "events": ["*"],
            "config": {"content_type": "json", "insecure_ssl": "0", "secret": "********"},
        },
        "sender": {"login": "Codertocat", "type": "User"},
    }
    if repository:
        body["repository"] = repository_fields(repository)
    else:
        body["organization"] = {"login": "Octocoders", "id": 38302899}
    return body


def form_encode(payload: dict[str, Any]) -> bytes:
    """The body of a hook whose content type is `form`: `payload=<url-encoded JSON>`."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def push_tag(repo: GitRepo, tag: str, message: str) -> None:
    """Make an annotated tag of the work tree's HEAD and push it to the bare repository."""
    repo._git(repo.work, "tag", "-a", tag, "-m", message)
    repo._git(repo.work, "push", "--quiet", str(repo.bare), f"refs/tags/{tag}")


# --- end of intake builders ---------------------------------------------------------------


def delivery_headers(
    body: bytes, secret: str, event: str = "push", delivery: str | None = None
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body, secret),
    }


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class GitRepo:
    """A bare repository playing a GitHub repository, with a work tree to commit from."""

    def __init__(self, root: Path, branch: str = "main") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.bare = root / "origin.git"
        self.work = root / "work"
        self.branch = branch
        self._git(root, "init", "--quiet", "--bare", "-b", branch, str(self.bare))
        self._git(root, "init", "--quiet", "-b", branch, str(self.work))

    def commit(self, files: dict[str, str], message: str = "update") -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self._git(self.work, "add", "--all")
        self._git(self.work, "commit", "--quiet", "-m", message)
        self._git(self.work, "push", "--quiet", str(self.bare), f"HEAD:refs/heads/{self.branch}")
        return self._git(self.work, "rev-parse", "HEAD").strip()

    @staticmethod
    def _git(cwd: Path, *args: str) -> str:
        result = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env={**GIT_ENV, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout


def wait_until(
    check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.25
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A throw-away redis-server on loopback (no persistence), for tests that stop Redis."""

    def __init__(self, port: int, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(directory), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        wait_until(self.answers, 10, f"redis-server on port {port}")

    def answers(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            try:
                probe.connect(("127.0.0.1", self.port))
                probe.sendall(b"PING\r\n")
                return probe.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def state_keys(connection: Any) -> list[bytes]:
    """Redis keys other than /metrics' counters (which count refused deliveries too)."""
    found: list[bytes] = connection.keys("*")
    return [key for key in found if not key.startswith(b"nephelios:metrics:")]


def redelivered(send: Callable[[], Any]) -> Any:
    """Send one delivery twice: the first is accepted, the second answered as a duplicate."""
    first, again = send(), send()
    assert first.status_code == 202, first.text
    assert again.status_code == 200 and again.json()["duplicate"] is True, again.text
    return again


# --- the receiver in-process ----------------------------------------------------------------
def webhook_receiver(
    config_path: Path, connection: redis.Redis, secret: str, queue_name: str, **settings: Any
) -> TestClient:
    """The receiver on `config_path`'s nephelios.yml, checking deliveries against `secret`."""
    app_settings = Settings(webhook_secret=secret, queue_name=queue_name, **settings)
    return TestClient(create_app(app_settings, load_config(config_path), connection))


def admin_app(
    env: dict[str, str], connection: redis.Redis, token: str, **settings: Any
) -> tuple[Starlette, Settings]:
    """The admin API on the nephelios.yml, queue and state directory of a worker's `env`
    (conftest's `worker_env`), so that a worker sees the apps it creates."""
    config_path = Path(env["NEPHELIOS_CONFIG"])
    app_settings = Settings(
        config_path=config_path,
        queue_name=env["NEPHELIOS_QUEUE"],
        state_dir=Path(env["NEPHELIOS_STATE_DIR"]),
        admin_token=token,
        **settings,
    )
    return create_app(app_settings, load_config(config_path), connection), app_settings


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """`handler` served from a thread on an ephemeral port of 127.0.0.1 until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def remove_stack(client: docker.DockerClient, stack: str, timeout_s: float = 60) -> dict[str, str]:
    """`docker stack rm` and wait until its services and containers are gone; the stack's
    label filter, for what is left to remove (volumes, networks)."""
    engine.stack_rm(stack)
    in_stack = {"label": f"com.docker.stack.namespace={stack}"}
    wait_until(
        lambda: (
            not client.api.services(filters=in_stack)
            and not client.api.containers(all=True, filters=in_stack)
        ),
        timeout_s,
        f"stack {stack} and its containers to go",
    )
    return in_stack


def remove_app(client: docker.DockerClient, app: str) -> None:
    """Remove everything a test app made: stack, containers, images, volumes, secrets."""
    in_stack = remove_stack(client, app)
    for image in engine.app_images(client, app):
        client.images.remove(image.id, force=True)
    for volume in client.volumes.list(filters=in_stack):
        volume.remove(force=True)
    for secret in client.secrets.list(filters={"label": f"{engine.APP_LABEL}={app}"}):
        secret.remove()
