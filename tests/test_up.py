"""`nephelios up` as a user runs it: a real process on the real engine, with its own ports.

It runs an embedded redis-server (nothing answers at its REDIS_URL), a receiver, workers and
a Traefik stack of its own; the test sends it signed pushes and signals.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import redis
import yaml
from rq import Queue, Worker

from pipeline import engine
from pipeline.core.deployment import FAILED
from pipeline.errors import NepheliosError
from pipeline.settings import QUEUE_NAME
from pipeline.store import Store
from tests.conftest import EDGE_NETWORK, REDIS_URL, TEST_DOMAIN
from tests.support import delivery_headers, encode, push_payload, wait_until
from tests.test_e2e import finished
from webhooks import redis_server

SECRET = "up-secret"
# Generous for a loaded machine; the point is that it is bounded.
STOP_BOUND_S = 40


class Up:
    """One `nephelios up` process and where it answers."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.port = int(env["NEPHELIOS_PORT"])
        self.log_path = log_path
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "webhooks.cli", "up", *args],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        wait_until(self.healthy, 90, f"`nephelios up` to answer /health (see {log_path})")

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"up exited early:\n{self.log_path.read_text()}")
        return self.status("/health") == 200

    def status(self, path: str) -> int:
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return 0

    def push(self, commit: str) -> urllib.request.Request:
        body = encode(push_payload("acme/gone", commit))
        return urllib.request.Request(
            f"http://127.0.0.1:{self.port}/webhooks/github",
            data=body,
            headers=delivery_headers(body, SECRET),
            method="POST",
        )

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=STOP_BOUND_S)


@pytest.fixture
def up_env(
    tmp_path: Path,
    ops_port: Callable[[int], int],
    app_name: str,
    docker_client: docker.DockerClient,
) -> Iterator[dict[str, str]]:
    http_port, https_port, redis_port = ops_port(10), ops_port(11), ops_port(20)
    config = {
        "platform": {
            "domain": TEST_DOMAIN,
            "edge_network": EDGE_NETWORK,
            "http_port": http_port,
            "https_port": https_port,
        },
        # The repository does not exist: a deployment that runs fails at its fetch, quickly.
        "apps": {app_name: {"repo": "acme/gone", "git_url": str(tmp_path / "missing.git")}},
    }
    (tmp_path / "nephelios.yml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "NEPHELIOS_CONFIG": str(tmp_path / "nephelios.yml"),
        "NEPHELIOS_STATE_DIR": str(tmp_path / "state"),
        "NEPHELIOS_PORT": str(ops_port(1)),
        "NEPHELIOS_WEBHOOK_SECRET": SECRET,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
    }
    yield env
    edge_stack = f"nephelios-ops-test-{http_port}"
    engine.stack_rm(edge_stack)
    in_stack = {"label": f"com.docker.stack.namespace={edge_stack}"}
    wait_until(
        lambda: not docker_client.api.containers(all=True, filters=in_stack),
        60,
        f"the {edge_stack} Traefik to go",
    )


def up_args(env: dict[str, str], workers: int) -> list[str]:
    http_port = yaml.safe_load(Path(env["NEPHELIOS_CONFIG"]).read_text())["platform"]["http_port"]
    edge_stack = f"nephelios-ops-test-{http_port}"
    return ["--workers", str(workers), "--edge-stack", edge_stack, "--drain-timeout", "20"]


@pytest.mark.docker
def test_up_keeps_queued_work_across_a_restart_and_stops_cleanly(
    up_env: dict[str, str], tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    log_path = tmp_path / "up.log"
    redis_url = up_env["REDIS_URL"]

    # First run, no workers: a push is accepted and stays queued in the embedded Redis.
    first = Up(up_env, log_path, *up_args(up_env, workers=0))
    try:
        assert "started an embedded redis-server" in log_path.read_text()
        with urllib.request.urlopen(first.push("d" * 40), timeout=5) as response:  # noqa: S310
            assert response.status == 202
            deployment_id = yaml.safe_load(response.read())["apps"][0]["deployment"]
        assert first.stop(signal.SIGTERM) == 0
    finally:
        first.process.kill()
        first.process.wait()
    assert first.status("/health") == 0, "the receiver still answers after SIGTERM"
    assert not redis_server.answers(redis.Redis.from_url(redis_url)), "Redis still answers"
    assert (tmp_path / "state" / "redis" / "appendonlydir").is_dir()

    # Second run, one worker: the queued deployment is still there and gets run.
    second = Up(up_env, log_path, *up_args(up_env, workers=1))
    try:
        connection = redis.Redis.from_url(redis_url)
        store = Store(connection)
        done = wait_until(lambda: finished(store, deployment_id), 60, "the queued deployment")
        assert done.status == FAILED and "fetch" in done.error.lower(), done.error
        queue = Queue(QUEUE_NAME, connection=connection)
        # The worker's first sweep may have kicked the app again (its deployment waited with
        # nobody on it); that job finds nothing left to do and the queue drains.
        wait_until(
            lambda: queue.count == 0 and queue.started_job_registry.count == 0,
            30,
            "the queue to drain",
        )
        assert second.stop(signal.SIGINT) == 0
    finally:
        second.process.kill()
        second.process.wait()
    output = log_path.read_text()
    assert output.count("SIG") == 2 and output.count("\nstopped") == 2, output
    assert "Traceback" not in output, output
    assert second.status("/health") == 0


@pytest.mark.docker
def test_children_do_not_outlive_a_killed_up(up_env: dict[str, str], tmp_path: Path) -> None:
    running = Up(up_env, tmp_path / "up.log", *up_args(up_env, workers=1))
    running.process.kill()
    running.process.wait()
    embedded = redis.Redis.from_url(up_env["REDIS_URL"])
    wait_until(lambda: running.status("/health") == 0, 30, "the receiver to go")
    wait_until(lambda: not redis_server.answers(embedded), 30, "the embedded Redis to go")


@pytest.mark.parametrize("engine", ["missing", "unreachable"])
def test_up_says_in_one_line_when_docker_is_missing_or_unreachable(
    tmp_path: Path, ops_port: Callable[[int], int], engine: str
) -> None:
    port = ops_port(33)
    docker_host = (
        f"unix://{tmp_path}/docker.sock" if engine == "missing" else f"tcp://127.0.0.1:{port}"
    )
    env = {**os.environ, "DOCKER_HOST": docker_host, "NEPHELIOS_STATE_DIR": str(tmp_path / "s")}
    result = subprocess.run(
        [sys.executable, "-m", "webhooks.cli", "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    expected = {
        "missing": f"nephelios: no Docker engine: {tmp_path}/docker.sock does not exist "
        "(install Docker, e.g. apt-get install docker.io, and start dockerd)\n",
        "unreachable": f"nephelios: the Docker engine at tcp://127.0.0.1:{port} does not "
        "answer (is dockerd running?): Connection refused\n",
    }
    assert result.stderr == expected[engine]
    assert not (tmp_path / "s").exists()


def test_embedded_redis_is_refused_for_a_remote_url(tmp_path: Path) -> None:
    # Nothing is contacted: the host is checked before anything starts.
    unused = redis.Redis.from_url("redis://redis.example.com:6379/0")
    with pytest.raises(NepheliosError, match=r"Redis does not answer at REDIS_URL \(redis://redis"):
        redis_server.start("redis://:pw@redis.example.com:6379/0", tmp_path, unused)
    assert not (tmp_path / "redis").exists()


def test_embedded_redis_takes_its_password_from_the_url_without_showing_it(
    tmp_path: Path, ops_port: Callable[[int], int]
) -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{ops_port(21)}/0"
    connection = redis.Redis.from_url(url)
    process = redis_server.start(url, tmp_path, connection)
    try:
        assert isinstance(process.args, list) and process.args[1:] == ["-"]
        assert connection.config_get("appendonly") == {"appendonly": "yes"}
        anonymous = redis.Redis.from_url(url.replace(":s3cret-pw@", ""))
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        assert "s3cret" not in redis_server.shown(url)
        assert Worker.all(connection=connection) == []
    finally:
        redis_server.stop(process)
    assert process.returncode == 0


class StallingGitServer:
    """A loopback TCP server that accepts git:// connections and answers nothing until
    `hold_s` has passed (then hangs up), so a deploy job stays busy in its fetch."""

    def __init__(self, port: int, hold_s: float) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.url = f"git://127.0.0.1:{port}/stalled.git"
        self.hold_s = hold_s
        self.closing = threading.Event()
        self.connected = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connected.set()
            threading.Thread(target=self._hold, args=(connection,), daemon=True).start()

    def _hold(self, connection: socket.socket) -> None:
        self.closing.wait(self.hold_s)
        connection.close()

    def close(self) -> None:
        self.closing.set()
        # shutdown() wakes the thread blocked in accept(); close() alone would leave it, and
        # the port, held.
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


@pytest.mark.docker
@pytest.mark.parametrize(("hold_s", "drain_s"), [(3.0, 30.0), (600.0, 2.0)], ids=["warm", "cold"])
def test_sigterm_drains_a_busy_worker_within_the_bound(
    up_env: dict[str, str],
    tmp_path: Path,
    redis_conn: redis.Redis,
    queue_name: str,
    ops_port: Callable[[int], int],
    app_name: str,
    docker_client: docker.DockerClient,
    hold_s: float,
    drain_s: float,
) -> None:
    """warm: the job ends inside the drain window and is recorded as finished; cold: it does
    not, and `up` still exits within drain + cold-stop time, with no worker left registered."""
    git_server = StallingGitServer(ops_port(60), hold_s)
    config_path = Path(up_env["NEPHELIOS_CONFIG"])
    config = yaml.safe_load(config_path.read_text())
    config["apps"][app_name]["git_url"] = git_server.url
    config_path.write_text(yaml.safe_dump(config))
    up_env = {**up_env, "REDIS_URL": REDIS_URL, "NEPHELIOS_QUEUE": queue_name}
    args = [*up_args(up_env, workers=1)[:-1], str(drain_s)]
    running = Up(up_env, tmp_path / "up.log", *args)
    try:
        with urllib.request.urlopen(running.push("e" * 40), timeout=5) as response:  # noqa: S310
            deployment_id = yaml.safe_load(response.read())["apps"][0]["deployment"]
        assert git_server.connected.wait(30), "the worker never started fetching"

        started_at = time.monotonic()
        assert running.stop(signal.SIGTERM) == 0
        took_s = time.monotonic() - started_at
    finally:
        running.process.kill()
        running.process.wait()
        git_server.close()

    queue = Queue(queue_name, connection=redis_conn)
    assert Worker.all(connection=redis_conn, queue=queue) == []
    deployment = Store(redis_conn).get(deployment_id)
    assert deployment is not None
    if hold_s < drain_s:
        # The job ran to its end inside the window, and the worker exited soon after it
        # (webhooks/rqworker.py: RQ's pub/sub thread used to hold a warm stop up to 60 s).
        assert hold_s - 1 < took_s < hold_s + 10, took_s
        assert deployment.status == FAILED and "git fetch" in deployment.error
        assert queue.started_job_registry.count == 0
    else:
        assert drain_s <= took_s < drain_s + 20, took_s
        assert "cold shutdown" in (tmp_path / "up.log").read_text()
