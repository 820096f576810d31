"""`nephelios up`: everything a single host needs, in one process tree.

Checks the engine, initialises swarm, ensures the edge network and Traefik, starts the
receiver and the workers as child processes, optionally deploys the bundled example app,
prints where things answer, and stops the children on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

import git
import redis

from pipeline import platform
from pipeline.core.config import App, Config
from pipeline.core.deployment import SUCCEEDED
from pipeline.errors import NepheliosError
from pipeline.queueing import enqueue_deployment
from pipeline.settings import Settings
from pipeline.store import Store
from webhooks.app import connect_redis

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
START_TIMEOUT_S = 30.0
EXAMPLE_DEPLOY_TIMEOUT_S = 300.0


def up(settings: Settings, config: Config, args: argparse.Namespace) -> int:
    client = platform.connect()
    if platform.ensure_swarm(client, args.advertise_addr):
        print(f"swarm initialised (advertising {args.advertise_addr})")
    platform.ensure_network(client, config.platform.edge_network)
    platform.ensure_edge(config.platform)
    print(f"edge router (Traefik) on port {config.platform.http_port}")

    connection = connect_redis(settings.redis_url)
    try:
        connection.ping()
    except redis.RedisError as exc:
        raise NepheliosError(f"Redis does not answer at REDIS_URL: {exc}") from exc

    env = child_environment(settings)
    children = start_children(args.workers, args.log_level, env)
    try:
        wait_for_health(settings.port)
        print(f"webhook receiver: http://<this host>:{settings.port}/webhooks/github")
        if args.example:
            deploy_examples(settings, config, connection)
        if args.detach:
            print("detached; stop with: kill " + " ".join(str(c.pid) for c in children))
            return 0
        print("running; Ctrl-C stops the receiver and workers (apps keep running)")
        return supervise(children)
    except BaseException:
        stop(children)
        raise


def child_environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["NEPHELIOS_CONFIG"] = str(settings.config_path.resolve())
    if not settings.webhook_secret:
        env["NEPHELIOS_WEBHOOK_SECRET"] = stored_secret(settings.state_dir / "webhook-secret")
        print(f"webhook secret: generated, in {settings.state_dir / 'webhook-secret'}")
    return env


def stored_secret(path: Path) -> str:
    """Read the generated webhook secret, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def start_children(
    workers: int, log_level: str, env: dict[str, str]
) -> list[subprocess.Popen[bytes]]:
    base = [sys.executable, "-m", "webhooks.cli", "--log-level", log_level]
    children = [subprocess.Popen([*base, "serve"], env=env)]
    children += [subprocess.Popen([*base, "worker"], env=env) for _ in range(max(1, workers))]
    return children


def wait_for_health(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    url = f"http://127.0.0.1:{port}/health"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise NepheliosError(f"the receiver did not answer on {url} within {START_TIMEOUT_S:.0f}s")


def deploy_examples(settings: Settings, config: Config, connection: redis.Redis) -> None:
    for name, app in config.apps.items():
        source = EXAMPLES_DIR / name
        if not source.is_dir() or not app.git_url or "://" in app.git_url:
            continue
        commit = seed_repository(source, Path(app.git_url), app.branch)
        deployment = enqueue_deployment(
            connection, settings.queue_name, app, commit, f"refs/heads/{app.branch}", "cli:up"
        )
        print(f"example {name}: deploying {commit[:12]} (deployment {deployment.id})")
        wait_for_deployment(Store(connection), deployment.id, app, config)


def seed_repository(source: Path, bare_path: Path, branch: str) -> str:
    """Commit `source`'s files to `branch` of a local bare repository; return the commit."""
    bare = git.Repo(bare_path) if bare_path.exists() else git.Repo.init(bare_path, bare=True)
    with tempfile.TemporaryDirectory(prefix="nephelios-seed-") as tmp:
        work = git.Repo.init(tmp)
        for item in source.iterdir():
            target = Path(tmp) / item.name
            if item.is_dir():
                shutil.copytree(item, target)
            else:
                shutil.copy2(item, target)
        work.git.add("--all")
        env = {
            "GIT_AUTHOR_NAME": "nephelios",
            "GIT_AUTHOR_EMAIL": "nephelios@localhost",
            "GIT_COMMITTER_NAME": "nephelios",
            "GIT_COMMITTER_EMAIL": "nephelios@localhost",
        }
        tree = work.git.write_tree()
        parents = []
        if _has_branch(bare, branch):
            head = bare.git.rev_parse(f"refs/heads/{branch}")
            if bare.git.rev_parse(f"{head}^{{tree}}") == tree:
                return str(head)
            work.git.fetch(str(bare_path), f"refs/heads/{branch}")
            parents = ["-p", head]
        commit = str(work.git.commit_tree(tree, *parents, "-m", f"example {source.name}", env=env))
        work.git.push(str(bare_path), f"{commit}:refs/heads/{branch}")
    return commit


def _has_branch(repo: git.Repo, branch: str) -> bool:
    try:
        repo.git.rev_parse("--verify", "--quiet", f"refs/heads/{branch}")
    except git.GitCommandError:
        return False
    return True


def wait_for_deployment(store: Store, deployment_id: str, app: App, config: Config) -> None:
    deadline = time.monotonic() + EXAMPLE_DEPLOY_TIMEOUT_S
    while time.monotonic() < deadline:
        deployment = store.get(deployment_id)
        if deployment and deployment.finished:
            if deployment.status != SUCCEEDED:
                raise NepheliosError(f"example {app.name}: {deployment.status}: {deployment.error}")
            port = config.platform.http_port
            wait_for_route(port, app.domains[0])
            suffix = "" if port == 80 else f":{port}"
            for domain in app.domains:
                print(f"example {app.name} is live: http://{domain}{suffix}/")
            return
        time.sleep(0.5)
    raise NepheliosError(f"example {app.name}: not live after {EXAMPLE_DEPLOY_TIMEOUT_S:.0f}s")


def wait_for_route(port: int, domain: str) -> None:
    """Wait until Traefik routes `domain`; it picks up new tasks within its refresh period."""
    deadline = time.monotonic() + START_TIMEOUT_S
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": domain})
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=2):  # noqa: S310 - loopback
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise NepheliosError(f"Traefik does not route {domain} on port {port}")


def supervise(children: list[subprocess.Popen[bytes]]) -> int:
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping:
        if any(child.poll() is not None for child in children):
            print("a child process exited; stopping", file=sys.stderr)
            break
        time.sleep(0.5)
    return stop(children)


def stop(children: list[subprocess.Popen[bytes]]) -> int:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    status = 0
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        status = status or (child.returncode if child.returncode and child.returncode > 0 else 0)
    return status
