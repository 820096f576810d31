"""`nephelios up`: everything a single host needs, in one process tree.

Checks the engine, initialises swarm, ensures the edge network and Traefik, makes sure Redis
answers (running an embedded one when nothing does at a loopback REDIS_URL), starts the
receiver and the workers as child processes, optionally deploys the bundled example app,
and prints where things answer.

On SIGINT or SIGTERM it stops in order: the receiver first (no new deliveries), then the
workers with RQ's warm shutdown (each finishes its current deployment) for at most
`--drain-timeout` seconds, then a cold shutdown for any still busy (RQ kills the work horse
and files the job as failed), and the embedded Redis last, so that it flushes whatever the
others wrote. Children run in sessions of their own, so a Ctrl-C reaches only `up`, which
then drives that order.
"""

from __future__ import annotations

import argparse
import ctypes
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
from dataclasses import dataclass, field
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
from webhooks import redis_server
from webhooks.app import connect_redis

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
START_TIMEOUT_S = 30.0
EXAMPLE_DEPLOY_TIMEOUT_S = 300.0
RECEIVER_STOP_TIMEOUT_S = 10.0
COLD_STOP_TIMEOUT_S = 15.0
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


@dataclass
class ProcessTree:
    """The children of `up`, stopped in the order the module docstring gives."""

    redis: subprocess.Popen[bytes] | None = None
    receiver: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def all(self) -> list[subprocess.Popen[bytes]]:
        found = [self.receiver, *self.workers, self.redis]
        return [child for child in found if child is not None]

    def stop(self, drain_timeout_s: float) -> int:
        if self.receiver is not None:
            _signal_and_wait([self.receiver], RECEIVER_STOP_TIMEOUT_S)
        if self.workers:
            _drain(self.workers, drain_timeout_s)
        if self.redis is not None:
            redis_server.stop(self.redis)
        codes = [child.returncode for child in self.all]
        return next((code for code in codes if code and code > 0), 0)


def _signal_and_wait(children: list[subprocess.Popen[bytes]], timeout_s: float) -> bool:
    """SIGTERM the running ones and wait; True when all exited within `timeout_s`."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
    return True


def _drain(workers: list[subprocess.Popen[bytes]], drain_timeout_s: float) -> None:
    busy = sum(1 for worker in workers if worker.poll() is None)
    print(
        f"stopping {busy} worker(s): finishing current deployments (up to {drain_timeout_s:.0f}s)"
    )
    if _signal_and_wait(workers, drain_timeout_s):
        return
    # RQ takes a second SIGTERM as a cold shutdown: it kills the work horse and exits.
    # Known gap: the killed job stays in RQ's StartedJobRegistry and its record in
    # `building` until RQ's registry cleanup fails it; handing it back to the queue needs
    # the worker's per-app lock and stale-record handling (issue 4) to agree on it.
    print("drain timeout: cold shutdown of the workers still running", file=sys.stderr)
    if _signal_and_wait(workers, COLD_STOP_TIMEOUT_S):
        return
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


class StopRequested(Exception):
    """Raised by the first SIGINT/SIGTERM, wherever `up` is; carries the signal's name."""


class StopSignals:
    """From the first signal on, `up` stops in order; later signals are ignored, so that a
    second Ctrl-C cannot cut the drain short (the drain has its own bound)."""

    def __init__(self) -> None:
        self.received = ""

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.handle)
        signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received:
            return
        self.received = signal.Signals(signum).name
        raise StopRequested(self.received)


def up(settings: Settings, config: Config, args: argparse.Namespace) -> int:
    StopSignals().install()
    tree = ProcessTree()
    try:
        start(settings, config, args, tree)
        if args.detach:
            print("detached; stop with: kill " + " ".join(str(c.pid) for c in tree.all))
            return 0
        print("running; Ctrl-C stops the receiver and workers (apps keep running)")
        return supervise(tree, args.drain_timeout)
    except StopRequested as exc:
        print(f"{exc}: stopping the receiver")
        status = tree.stop(args.drain_timeout)
        print("stopped")
        return status
    except BaseException:
        tree.stop(args.drain_timeout)
        raise


def start(settings: Settings, config: Config, args: argparse.Namespace, tree: ProcessTree) -> None:
    ensure_docker()
    client = platform.connect()
    if platform.ensure_swarm(client, args.advertise_addr):
        print(f"swarm initialised (advertising {args.advertise_addr})")
    platform.ensure_network(client, config.platform.edge_network)
    platform.ensure_edge(config.platform, stack=args.edge_stack)
    print(f"edge router (Traefik) on port {config.platform.http_port}")

    connection = connect_redis(settings.redis_url)
    tree.redis = ensure_redis(settings, connection, bound=not args.detach)
    env = child_environment(settings)
    tree.receiver, tree.workers = start_children(args, env)
    wait_for_health(settings.port)
    announce(settings, config)
    if args.example:
        deploy_examples(settings, config, connection)


def ensure_docker() -> None:
    """The engine must answer (platform.connect says why not) and the CLI must exist."""
    if shutil.which("docker") is None:
        raise NepheliosError(
            "the docker command is not installed; Nephelios runs `docker stack deploy` "
            "(install Docker, e.g. apt-get install docker.io)"
        )


def ensure_redis(
    settings: Settings, connection: redis.Redis, bound: bool
) -> subprocess.Popen[bytes] | None:
    """None when Redis answers at REDIS_URL; else the embedded redis-server now answering."""
    if redis_server.answers(connection):
        return None
    process = redis_server.start(
        settings.redis_url, settings.state_dir, connection, die_with_parent if bound else None
    )
    print(
        f"redis: nothing answered at {redis_server.shown(settings.redis_url)}; started an "
        f"embedded redis-server (append-only file in {settings.state_dir / 'redis'})"
    )
    return process


def announce(settings: Settings, config: Config) -> None:
    print(f"webhook receiver: http://<this host>:{settings.port}/webhooks/github")
    print(f"health: http://<this host>:{settings.port}/health, metrics: /metrics")
    port = config.platform.http_port
    suffix = "" if port == 80 else f":{port}"
    for app in config.apps.values():
        print(
            f"app {app.name} answers at " + ", ".join(f"http://{d}{suffix}/" for d in app.domains)
        )


def child_environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["NEPHELIOS_CONFIG"] = str(settings.config_path.resolve())
    if not settings.webhook_secret:
        path = settings.state_dir / "webhook-secret"
        how = "read from" if path.exists() else "generated, in"
        env["NEPHELIOS_WEBHOOK_SECRET"] = stored_secret(path)
        print(f"webhook secret: {how} {path}")
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
    args: argparse.Namespace, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], list[subprocess.Popen[bytes]]]:
    base = [sys.executable, "-m", "webhooks.cli", "--log-level", args.log_level]
    base += ["--log-format", args.log_format]
    bound = not args.detach
    receiver = _child([*base, "serve"], env, bound)
    return receiver, [_child([*base, "worker"], env, bound) for _ in range(max(0, args.workers))]


def _child(argv: list[str], env: dict[str, str], bound: bool) -> subprocess.Popen[bytes]:
    # Own session: a terminal's Ctrl-C goes to `up` alone, which then stops the children in
    # order; RQ would take a second signal as a cold shutdown.
    return subprocess.Popen(
        argv, env=env, start_new_session=True, preexec_fn=die_with_parent if bound else None
    )


def die_with_parent() -> None:
    """In a child, before exec: get SIGTERM when `up` dies, even by SIGKILL, rather than
    outlive it with nobody to stop it (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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


def supervise(tree: ProcessTree, drain_timeout_s: float) -> int:
    """Wait until a signal (StopRequested, handled by `up`) or until a child exits."""
    while True:
        exited = [child for child in tree.all if child.poll() is not None]
        if exited:
            print(f"a child process ({exited[0].args!r}) exited; stopping", file=sys.stderr)
            status = tree.stop(drain_timeout_s)
            print("stopped")
            return status
        time.sleep(0.2)
