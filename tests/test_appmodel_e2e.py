"""The app model on the real engine: each nephelios.yml key deployed by a real worker and
checked from outside (a request through a test Traefik, `docker service inspect`, a file read
with `docker exec`)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import redis

from pipeline import platform
from pipeline.core.config import parse_config
from tests.appmodel_support import (
    app_entry,
    body,
    deploy,
    docker_exec,
    request,
    running_container,
    service_spec,
    wait_finished,
    write_config,
)
from tests.conftest import EDGE_NETWORK, TEST_DOMAIN
from tests.support import GitRepo, remove_app, wait_until

pytestmark = pytest.mark.docker


@pytest.fixture
def new_app(docker_client: docker.DockerClient) -> Iterator[Callable[[], str]]:
    """Hands out fresh app names; removes every app handed out, with volumes and secrets."""
    names: list[str] = []

    def make() -> str:
        names.append(f"t{uuid.uuid4().hex[:8]}")
        return names[-1]

    yield make
    for name in names:
        remove_app(docker_client, name)


def test_two_apps_share_a_domain_on_paths_with_limits_and_placement(
    tmp_path: Path,
    edge: int,
    redis_conn: redis.Redis,
    worker: subprocess.Popen[bytes],
    worker_env: dict[str, str],
    new_app: Callable[[], str],
    docker_client: docker.DockerClient,
) -> None:
    shop, blog = new_app(), new_app()
    shared, other = f"www-{shop}.{TEST_DOMAIN}", f"alt-{shop}.{TEST_DOMAIN}"
    repo = GitRepo(tmp_path / "github")
    commit = repo.commit({"index.html": "root\n", "blog/index.html": "blog below /blog\n"})
    apps = {
        shop: {
            "repo": "acme/shop",
            "port": 8080,
            "domains": [shared],
            "path_prefixes": ["/shop"],
            "strip_prefix": True,
            "git_url": str(repo.bare),
            "resources": {"cpus": 0.5, "memory": "64M", "reserve_memory": "16M"},
            "placement": ["node.role == manager"],
        },
        blog: {
            "repo": "acme/blog",
            "port": 8080,
            "domains": [shared, other],
            "path_prefixes": ["/blog"],
            "git_url": str(repo.bare),
        },
    }
    write_config(Path(worker_env["NEPHELIOS_CONFIG"]), edge, apps)

    for app in (shop, blog):
        deployment = deploy(redis_conn, worker_env, app, commit)
        assert deployment.status == "succeeded", deployment.error

    # /shop is stripped before it reaches the app; /blog reaches it as it is.
    wait_until(lambda: body(edge, shared, "/shop/") == "root\n", 30, "/shop on the shared host")
    wait_until(lambda: "below /blog" in body(edge, shared, "/blog/"), 30, "/blog")
    assert "below /blog" in body(edge, other, "/blog/")
    assert request(edge, shared, "/shopping/")[0] == 404  # a prefix, not a string prefix
    assert request(edge, shared, "/")[0] == 404  # neither app claims the host's root

    spec = service_spec(docker_client, f"{shop}_web")["TaskTemplate"]
    assert spec["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * 2**20}
    assert spec["Resources"]["Reservations"] == {"MemoryBytes": 16 * 2**20}
    assert spec["Placement"]["Constraints"] == ["node.role == manager"]


def test_a_version_that_never_gets_healthy_is_rolled_back(
    tmp_path: Path,
    edge: int,
    redis_conn: redis.Redis,
    worker: subprocess.Popen[bytes],
    worker_env: dict[str, str],
    new_app: Callable[[], str],
    docker_client: docker.DockerClient,
) -> None:
    app = new_app()
    host = f"{app}.{TEST_DOMAIN}"
    repo = GitRepo(tmp_path / "github")
    health = {"path": "/healthz", "interval_s": 1, "timeout_s": 2, "retries": 2}
    config = app_entry(repo, health={**health, "start_period_s": 0})
    write_config(Path(worker_env["NEPHELIOS_CONFIG"]), edge, {app: config})

    good = repo.commit({"index.html": "v1\n", "healthz": "ok\n"})
    assert deploy(redis_conn, worker_env, app, good).status == "succeeded"
    healthcheck = service_spec(docker_client, f"{app}_web")["TaskTemplate"]["ContainerSpec"]
    assert "/healthz" in healthcheck["Healthcheck"]["Test"][1]

    (repo.work / "healthz").unlink()
    bad = repo.commit({"index.html": "v2\n"}, "drop the health path")
    failed = deploy(redis_conn, worker_env, app, bad)
    assert failed.status == "failed"
    # Swarm rolled the spec back; the worker may see that as the rollback state or as the
    # spec no longer naming this image, depending on when it looks.
    assert "rolled back" in failed.error or "no longer runs this image" in failed.error
    wait_until(lambda: body(edge, host) == "v1\n", 30, "v1 still served")
    image = service_spec(docker_client, f"{app}_web")["TaskTemplate"]["ContainerSpec"]["Image"]
    assert image.split("@")[0] == f"{app}:{good[:12]}"


def test_a_process_that_swarm_rolls_back_fails_the_deployment(
    tmp_path: Path,
    edge: int,
    redis_conn: redis.Redis,
    worker: subprocess.Popen[bytes],
    worker_env: dict[str, str],
    new_app: Callable[[], str],
    docker_client: docker.DockerClient,
) -> None:
    app = new_app()
    repo = GitRepo(tmp_path / "github")
    config_path = Path(worker_env["NEPHELIOS_CONFIG"])
    alive = {"command": "test -f /tmp/alive", "interval_s": 1, "start_period_s": 0}
    processes = {"worker": {"command": "touch /tmp/alive; exec sleep 1d", "health": alive}}
    write_config(config_path, edge, {app: app_entry(repo, processes=processes)})
    first = repo.commit({"index.html": "v1\n"})
    assert deploy(redis_conn, worker_env, app, first).status == "succeeded"
    check = service_spec(docker_client, f"{app}_worker")["TaskTemplate"]["ContainerSpec"]
    assert check["Healthcheck"]["Test"] == ["CMD", "/bin/sh", "-c", "test -f /tmp/alive"]

    crashing = {"worker": {"command": "echo cannot start >&2; exit 3"}}
    write_config(config_path, edge, {app: app_entry(repo, processes=crashing)})
    second = repo.commit({"index.html": "v2\n"}, "the worker now crashes")
    failed = deploy(redis_conn, worker_env, app, second)

    # The web service took v2, but the record says the deployment as a whole did not.
    assert failed.status == "failed"
    assert failed.error.startswith("process worker: "), failed.error
    spec = service_spec(docker_client, f"{app}_worker")["TaskTemplate"]["ContainerSpec"]
    assert spec["Image"].split("@")[0] == f"{app}:{first[:12]}"  # Swarm put it back


def test_processes_volumes_secrets_and_build_options(
    tmp_path: Path,
    edge: int,
    redis_conn: redis.Redis,
    worker: subprocess.Popen[bytes],
    worker_env: dict[str, str],
    new_app: Callable[[], str],
    docker_client: docker.DockerClient,
) -> None:
    app = new_app()
    host = f"{app}.{TEST_DOMAIN}"
    repo = GitRepo(tmp_path / "github")
    dockerfile = (
        "FROM nephelios/busybox:local AS base\n"
        "ARG GREETING\n"
        'RUN mkdir -p /www && echo "$GREETING" > /www/index.html\n'
        "FROM base AS web\n"
        'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'
        "FROM base AS broken\n"
        'CMD ["false"]\n'
    )
    commit = repo.commit({"services/site/docker/web.Dockerfile": dockerfile, "README": "x\n"})
    config = app_entry(
        repo,
        build={
            "context": "services/site",
            "dockerfile": "docker/web.Dockerfile",
            "target": "web",
            "args": {"GREETING": "built with args"},
        },
        volumes={"data": "/data"},
        secrets={"API_TOKEN": {"env": True}, "TLS_KEY": None},
        processes={"worker": {"command": "echo working > /data/worker.txt; exec sleep 1d"}},
    )
    config_path = Path(worker_env["NEPHELIOS_CONFIG"])
    write_config(config_path, edge, {app: config})

    def secret_set(name: str, value: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "webhooks.cli", "secret", "set", app, name],
            input=value,
            env=worker_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    unset = deploy(redis_conn, worker_env, app, commit)
    assert unset.status == "failed"
    assert "secret API_TOKEN" in unset.error

    assert "not deployed" in secret_set("API_TOKEN", "first-token\n")
    secret_set("TLS_KEY", "key material")
    deployment = deploy(redis_conn, worker_env, app, commit)
    assert deployment.status == "succeeded", deployment.error
    wait_until(lambda: body(edge, host) == "built with args\n", 30, "the web target")

    image = f"{app}:{commit[:12]}"
    web = running_container(docker_client, f"{app}_web", image)
    assert docker_exec(web, "cat", "/run/secrets/API_TOKEN") == "first-token"
    assert docker_exec(web, "cat", "/run/secrets/TLS_KEY") == "key material"
    # httpd is PID 1 after the wrapper's exec; its environment carries the exported secret.
    assert "API_TOKEN=first-token" in docker_exec(web, "cat", "/proc/1/environ").split("\0")
    worker_task = running_container(docker_client, f"{app}_worker", image)
    wait_until(
        lambda: docker_exec(worker_task, "cat", "/data/worker.txt") == "working\n",
        30,
        "the worker process to write to the shared volume",
    )
    assert "traefik.enable" not in service_spec(docker_client, f"{app}_worker")["Labels"]
    spec = service_spec(docker_client, f"{app}_web")
    assert spec["UpdateConfig"]["Order"] == "stop-first"  # volumes: never two copies
    docker_exec(web, "sh", "-c", "echo kept > /data/kept.txt")

    # Rotation: a new value makes a new secret version and rolls the app out by itself.
    out = secret_set("API_TOKEN", "second-token")
    deployment_id = out.split("deployment ")[1].rstrip(")\n")
    rotated = wait_finished(redis_conn, deployment_id, 120)
    assert rotated.status == "succeeded", rotated.error
    web = running_container(docker_client, f"{app}_web", image)
    wait_until(
        lambda: docker_exec(web, "cat", "/run/secrets/API_TOKEN") == "second-token",
        30,
        "the rotated secret in the new task",
    )
    assert docker_exec(web, "cat", "/data/kept.txt") == "kept\n"  # the volume survived

    # Secret values are nowhere in Redis, nor in the service specs.
    for key in redis_conn.scan_iter():
        dump = redis_conn.dump(key) or b""
        assert b"first-token" not in dump and b"second-token" not in dump
    for service in ("web", "worker"):
        assert "second-token" not in str(service_spec(docker_client, f"{app}_{service}"))

    # A process dropped from the config is removed from Swarm on the next deploy.
    write_config(config_path, edge, {app: {**config, "processes": {}}})
    assert deploy(redis_conn, worker_env, app, commit).status == "succeeded"
    assert not docker_client.api.services(filters={"name": f"{app}_worker"})
    assert docker_client.api.services(filters={"name": f"{app}_web"})

    # Volumes outlive the stack and go only when asked for.
    subprocess.run(["docker", "stack", "rm", app], check=True, capture_output=True)
    in_stack = {"label": f"com.docker.stack.namespace={app}"}
    wait_until(
        lambda: not docker_client.api.containers(all=True, filters=in_stack), 60, "containers"
    )
    assert [v.name for v in docker_client.volumes.list(filters=in_stack)] == [f"{app}_data"]
    subprocess.run(
        [sys.executable, "-m", "webhooks.cli", "volume", "rm", app], env=worker_env, check=True
    )
    assert not docker_client.volumes.list(filters=in_stack)


def test_tls_redirects_http_and_serves_https(
    tmp_path: Path,
    redis_conn: redis.Redis,
    worker: subprocess.Popen[bytes],
    worker_env: dict[str, str],
    new_app: Callable[[], str],
    tls_edge: int,
) -> None:
    app = new_app()
    host = f"{app}.{TEST_DOMAIN}"
    repo = GitRepo(tmp_path / "github")
    commit = repo.commit({"index.html": "secure\n"})
    write_config(
        Path(worker_env["NEPHELIOS_CONFIG"]),
        tls_edge,
        {app: app_entry(repo)},
        https_port=tls_edge + 1,
        tls=TLS_SETTINGS,
    )
    assert deploy(redis_conn, worker_env, app, commit).status == "succeeded"

    def redirect() -> dict[str, str] | None:
        status, _, headers = request(tls_edge, host)
        return headers if status in (301, 308) else None  # permanent

    headers = wait_until(redirect, 30, "the HTTP->HTTPS redirect")
    assert headers["Location"] == f"https://{host}:{tls_edge + 1}/"
    # No certificate can be fetched here (no ACME server is reachable, and the resolver
    # points at a closed loopback port), so Traefik answers with its default certificate.
    wait_until(
        lambda: request(tls_edge + 1, host, tls=True)[1] == "secure\n", 30, "the HTTPS answer"
    )
    wait_until(lambda: "127.0.0.1:25099" in traefik_log(), 30, "Traefik's failed ACME attempt")


def traefik_log() -> str:
    result = subprocess.run(
        ["docker", "service", "logs", "--raw", f"nephelios-test-tls-{TLS_EDGE_PORT}_traefik"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout + result.stderr


# The ACME directory is a closed port on the Traefik container's loopback: this test must
# not send traffic to Let's Encrypt (or anywhere off this machine).
TLS_SETTINGS = {
    "email": "ops@example.com",
    "challenge": "http",
    "staging": True,
    "ca_server": "https://127.0.0.1:25099/directory",
}
TLS_EDGE_PORT = 25000


@pytest.fixture(scope="module")
def tls_edge(docker_client: docker.DockerClient) -> Iterator[int]:
    """A second test Traefik with the Let's Encrypt resolver on ports 25000 and 25001."""
    stack = f"nephelios-test-tls-{TLS_EDGE_PORT}"
    config = parse_config(
        {
            "platform": {
                "domain": TEST_DOMAIN,
                "edge_network": EDGE_NETWORK,
                "http_port": TLS_EDGE_PORT,
                "https_port": TLS_EDGE_PORT + 1,
                "tls": TLS_SETTINGS,
            }
        }
    )
    platform.ensure_network(docker_client, EDGE_NETWORK)
    platform.ensure_edge(config.platform, stack=stack)
    service = f"{stack}_traefik"
    args = docker_client.api.inspect_service(service)["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert "--certificatesresolvers.letsencrypt.acme.httpchallenge=true" in args["Args"]
    wait_until(
        lambda: any(
            t["Status"]["State"] == "running"
            for t in docker_client.api.tasks(filters={"service": service})
        ),
        60,
        "the TLS Traefik to run",
    )
    yield TLS_EDGE_PORT
    remove_app(docker_client, stack)


def test_generated_dockerfile_overrides_and_default_health_check(
    tmp_path: Path,
    edge: int,
    redis_conn: redis.Redis,
    worker: subprocess.Popen[bytes],
    worker_env: dict[str, str],
    new_app: Callable[[], str],
    docker_client: docker.DockerClient,
) -> None:
    app = new_app()
    host = f"{app}.{TEST_DOMAIN}"
    repo = GitRepo(tmp_path / "github")
    commit = repo.commit({"index.html": "generated\n"})
    config = app_entry(
        repo,
        app_workdir="/site",
        install_command="echo installed > /site/installed.txt",
        build_command="echo built > /site/built.txt",
        run_command="exec httpd -f -p 8080 -h /site",
    )
    write_config(Path(worker_env["NEPHELIOS_CONFIG"]), edge, {app: config})
    assert deploy(redis_conn, worker_env, app, commit).status == "succeeded"

    wait_until(lambda: body(edge, host, "/built.txt") == "built\n", 30, "the built file")
    assert body(edge, host, "/installed.txt") == "installed\n"
    assert body(edge, host) == "generated\n"
    # The generated Dockerfile's own HEALTHCHECK runs: Swarm reports the task healthy.
    container = running_container(docker_client, f"{app}_web", f"{app}:{commit[:12]}")
    state = docker_client.api.inspect_container(container)["State"]
    assert state["Health"]["Status"] == "healthy"


def test_a_first_version_that_never_gets_healthy_fails_and_is_not_served(
    tmp_path: Path,
    edge: int,
    redis_conn: redis.Redis,
    worker: subprocess.Popen[bytes],
    worker_env: dict[str, str],
    new_app: Callable[[], str],
) -> None:
    app = new_app()
    repo = GitRepo(tmp_path / "github")
    health = {
        "path": "/healthz",
        "interval_s": 1,
        "timeout_s": 2,
        "retries": 1,
        "start_period_s": 0,
    }
    config = app_entry(repo, health=health)
    write_config(Path(worker_env["NEPHELIOS_CONFIG"]), edge, {app: config})
    commit = repo.commit({"index.html": "never healthy\n"})

    deployment = deploy(redis_conn, worker_env, app, commit)
    assert deployment.status == "failed"
    assert "new tasks fail" in deployment.error
    assert request(edge, f"{app}.{TEST_DOMAIN}")[0] != 200
