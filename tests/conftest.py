"""Fixtures for the Redis and Docker tiers.

Redis tests use database 15 of REDIS_URL's server (flushed around each test) and a queue
name of their own. Docker tests need the engine in swarm mode with the local images that
`scripts/bootstrap.sh` makes; they run a Traefik of their own on a high port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import redis

from pipeline import engine, platform
from pipeline.core.config import parse_config
from tests.support import RedisServer, free_port, remove_app, wait_until

REDIS_URL = os.environ.get("NEPHELIOS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
EDGE_PORT = int(os.environ.get("NEPHELIOS_TEST_HTTP_PORT", "19080"))
# intake: a redis-server of the intake tests' own, stopped and restarted to show 503 and
# recovery; never the shared one.
SPARE_REDIS_PORT = int(os.environ.get("NEPHELIOS_TEST_SPARE_REDIS_PORT", "21001"))
EDGE_NETWORK = "nephelios-test-edge"
EDGE_STACK = f"nephelios-test-edge-{EDGE_PORT}"
TEST_DOMAIN = "test.localhost"


@pytest.fixture
def redis_conn() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is needed at {REDIS_URL} (run scripts/bootstrap.sh): {exc}")
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


@pytest.fixture
def queue_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = platform.connect()
    except Exception as exc:
        pytest.fail(f"a Docker engine is needed (run scripts/bootstrap.sh): {exc}")
    if client.info().get("Swarm", {}).get("LocalNodeState") != "active":
        pytest.fail("the Docker engine must be in swarm mode (run scripts/bootstrap.sh)")
    return client


@pytest.fixture(scope="session")
def edge(docker_client: docker.DockerClient) -> Iterator[int]:
    """A Traefik of the tests' own on EDGE_PORT; yields the port."""
    config = parse_config(
        {
            "platform": {
                "domain": TEST_DOMAIN,
                "edge_network": EDGE_NETWORK,
                "http_port": EDGE_PORT,
                "https_port": EDGE_PORT + 363,
            }
        }
    )
    platform.ensure_network(docker_client, EDGE_NETWORK)
    platform.ensure_edge(config.platform, stack=EDGE_STACK)
    wait_until(lambda: _traefik_running(docker_client), 60, "the test Traefik to run")
    yield EDGE_PORT
    engine.stack_rm(EDGE_STACK)


def _traefik_running(client: docker.DockerClient) -> bool:
    tasks = client.api.tasks(
        filters={"service": f"{EDGE_STACK}_traefik", "desired-state": "running"}
    )
    return any(t.get("Status", {}).get("State") == "running" for t in tasks)


@pytest.fixture
def app_name() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cleanup_stack(docker_client: docker.DockerClient, app_name: str) -> Iterator[str]:
    """Remove the test app's stack, images, volumes and secrets afterwards, whatever happened."""
    yield app_name
    remove_app(docker_client, app_name)


@pytest.fixture
def worker_env(tmp_path: Path, queue_name: str) -> dict[str, str]:
    """Environment for a real `nephelios worker` subprocess working for one test."""
    return {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "NEPHELIOS_QUEUE": queue_name,
        "NEPHELIOS_STATE_DIR": str(tmp_path / "state"),
        "NEPHELIOS_CONFIG": str(tmp_path / "nephelios.yml"),
    }


@pytest.fixture
def worker(worker_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A `nephelios worker` process; the test writes nephelios.yml before jobs run."""
    Path(worker_env["NEPHELIOS_CONFIG"]).write_text("apps: {}\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "webhooks.cli", "--log-level", "debug", "worker"], env=worker_env
    )
    yield process
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- operations tests: ports for servers the tests start (sinks, redis-server, `up`) -------
# NEPHELIOS_TEST_OPS_PORT_BASE pins them to a block (base + offset); unset, the OS picks free
# ports, so that parallel sessions running the suite do not collide.
OPS_PORT_BASE = os.environ.get("NEPHELIOS_TEST_OPS_PORT_BASE", "")


@pytest.fixture
def ops_port() -> Callable[[int], int]:
    def port(offset: int) -> int:
        return int(OPS_PORT_BASE) + offset if OPS_PORT_BASE else free_port()

    return port


@pytest.fixture
def own_redis(tmp_path: Path, ops_port: Callable[[int], int]) -> Iterator[RedisServer]:
    """A redis-server of the test's own, which the test may stop."""
    server = RedisServer(ops_port(30), tmp_path / "redis")
    yield server
    server.stop()
