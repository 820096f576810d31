"""What every benchmark shares: a Nephelios of its own on loopback, and measurements.

A `Rig` runs the real thing for one benchmark: a config file, `nephelios serve` and N
`nephelios worker` processes on their own Redis database and queue, and (when asked) a
Traefik of its own on a bench port. Apps come from local bare repositories (tests.support
.GitRepo plays GitHub); pushes are signed deliveries sent over HTTP like GitHub sends them.
Everything the rig starts, it stops; every stack it deploys, it removes.

Ports and the Redis database come from the environment so benchmarks never collide with a
running Nephelios or the tests: NEPHELIOS_BENCH_REDIS_URL (default database 9),
NEPHELIOS_BENCH_PORT_BASE (default 26000; the receiver listens on base+30, Traefik on
base+80, the baseline receiver on base+90).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import redis
import yaml

from pipeline import engine, platform
from pipeline.core.config import parse_config
from pipeline.core.deployment import Deployment
from pipeline.store import Store
from tests.support import GitRepo, delivery_headers, encode, push_payload

T = TypeVar("T")

REDIS_URL = os.environ.get("NEPHELIOS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
PORT_BASE = int(os.environ.get("NEPHELIOS_BENCH_PORT_BASE", "26000"))
RECEIVER_PORT = PORT_BASE + 30
EDGE_PORT = PORT_BASE + 80
BASELINE_PORT = PORT_BASE + 90
EDGE_NETWORK = "nephelios-bench-edge"
EDGE_STACK = f"nephelios-bench-edge-{EDGE_PORT}"
DOMAIN = "bench.localhost"
SECRET = "bench-secret"  # noqa: S105 - signs the benchmarks' own deliveries


@dataclass
class Row:
    """One line of the results table."""

    bench: str
    metric: str
    nephelios: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll `check` until it returns something truthy, or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def fetch(host: str, port: int = EDGE_PORT, timeout_s: float = 3.0) -> tuple[int, str]:
    """Status and body Traefik gives for `host`; status 0 when the connection failed."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""
    except (urllib.error.URLError, OSError):
        return 0, ""


def rss_tree_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants, in KiB (0 once it is gone)."""
    total = 0
    for each in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = [int(c) for c in children]
    for child in list(found):
        found += descendants(child)
    return found


@dataclass
class Rig:
    """A Nephelios of the benchmark's own: receiver, workers, apps, optional Traefik."""

    root: Path
    workers: int = 1
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    repos: dict[str, GitRepo] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    queue: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.store = Store(self.redis)
        self.docker = platform.connect()

    # -- apps ---------------------------------------------------------------------------

    def add_app(self, name: str, **extra: Any) -> GitRepo:
        repo = GitRepo(self.root / "github" / name)
        self.repos[name] = repo
        self.apps[name] = {
            "repo": f"bench/{name}",
            "port": 8080,
            "git_url": str(repo.bare),
            **extra,
        }
        return repo

    def write_config(self) -> Path:
        path = self.root / "nephelios.yml"
        platform_section = {"domain": DOMAIN, "edge_network": EDGE_NETWORK, "http_port": EDGE_PORT}
        path.write_text(yaml.safe_dump({"platform": platform_section, "apps": self.apps}))
        return path

    # -- processes ----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "REDIS_URL": REDIS_URL,
            "NEPHELIOS_QUEUE": self.queue,
            "NEPHELIOS_PORT": str(RECEIVER_PORT),
            "NEPHELIOS_STATE_DIR": str(self.root / "state"),
            "NEPHELIOS_CONFIG": str(self.write_config()),
            "NEPHELIOS_WEBHOOK_SECRET": SECRET,
        }

    def start(self, serve: bool = True) -> None:
        self.redis.flushdb()
        platform.ensure_network(self.docker, EDGE_NETWORK)
        env = self.env()
        base = [sys.executable, "-m", "webhooks.cli", "--log-level", "warning"]
        quiet = subprocess.DEVNULL
        if serve:
            self.processes.append(
                subprocess.Popen([*base, "serve", "--host", "127.0.0.1"], env=env, stdout=quiet)
            )
            wait_for(self.healthy, 30, "the receiver")
        for _ in range(self.workers):
            self.processes.append(subprocess.Popen([*base, "worker"], env=env, stdout=quiet))

    @property
    def receiver(self) -> subprocess.Popen[bytes]:
        return self.processes[0]

    @property
    def worker_processes(self) -> list[subprocess.Popen[bytes]]:
        return self.processes[1:]

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{RECEIVER_PORT}/health"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    # -- pushes and records -------------------------------------------------------------

    def push(self, app: str, files: dict[str, str], message: str = "update") -> tuple[str, str]:
        """Commit `files` to the app's repository, deliver the push; (commit, deployment id)."""
        commit = self.repos[app].commit(files, message)
        return commit, self.deliver(app, commit)

    def deliver(self, app: str, commit: str) -> str:
        body = encode(push_payload(f"bench/{app}", commit))
        request = urllib.request.Request(
            f"http://127.0.0.1:{RECEIVER_PORT}/webhooks/github",
            data=body,
            headers=delivery_headers(body, SECRET),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            answer = json.loads(response.read())
        outcomes = [a for a in answer.get("apps", []) if a.get("app") == app]
        return str(outcomes[0].get("deployment", "")) if outcomes else ""

    def records(self, app: str) -> list[Deployment]:
        return self.store.recent(app, 200)

    def served(self, app: str, text: str) -> bool:
        status, body = fetch(f"{app}.{DOMAIN}")
        return status == 200 and text in body

    def remove_stacks(self) -> None:
        for name in self.apps:
            engine.stack_rm(name)
        for name in self.apps:
            label = {"label": f"com.docker.stack.namespace={name}"}
            wait_for(
                lambda: not self.docker.api.containers(all=True, filters=label),  # noqa: B023
                120,
                f"stack {name} to go",
            )
            for image in self.docker.images.list(filters={"label": f"{engine.APP_LABEL}={name}"}):
                self.docker.images.remove(image.id, force=True)


@contextmanager
def rig(
    root: Path, apps: dict[str, dict[str, Any]], workers: int = 1, serve: bool = True
) -> Iterator[Rig]:
    """A started Rig with `apps` declared; stopped and cleaned up afterwards."""
    the_rig = Rig(root, workers=workers)
    for name, extra in apps.items():
        the_rig.add_app(name, **extra)
    try:
        the_rig.start(serve=serve)
        yield the_rig
    finally:
        the_rig.stop()
        the_rig.remove_stacks()
        the_rig.redis.flushdb()


@contextmanager
def edge() -> Iterator[int]:
    """A Traefik of the benchmarks' own on EDGE_PORT, removed afterwards."""
    config = parse_config(
        {
            "platform": {
                "domain": DOMAIN,
                "edge_network": EDGE_NETWORK,
                "http_port": EDGE_PORT,
                "https_port": EDGE_PORT + 363,
            }
        }
    )
    client = platform.connect()
    platform.ensure_network(client, EDGE_NETWORK)
    platform.ensure_edge(config.platform, stack=EDGE_STACK)
    wait_for(lambda: _edge_running(client), 60, "the bench Traefik")
    try:
        yield EDGE_PORT
    finally:
        engine.stack_rm(EDGE_STACK)


def _edge_running(client: docker.DockerClient) -> bool:
    tasks = client.api.tasks(
        filters={"service": f"{EDGE_STACK}_traefik", "desired-state": "running"}
    )
    return any(t.get("Status", {}).get("State") == "running" for t in tasks)


def page(label: str) -> dict[str, str]:
    """A tiny static site whose body names `label`."""
    return {"index.html": f"<h1>{label}</h1>\n"}


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]
