"""The worker side on the real engine: bursts, order, crashes, failures and state kept right.

Each test runs real `nephelios worker` processes against a real Redis and the swarm, with a
local bare repository playing GitHub, an in-process receiver, a Traefik of the tests' own,
and (for commit statuses) a fake GitHub API on 127.0.0.1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import redis

from pipeline import engine
from pipeline.core.deployment import Deployment
from pipeline.store import AppQueue
from tests.support import wait_until
from tests.worker_support import (
    FakeGitHub,
    Site,
    Workers,
    dockerfile,
    fake_github,
    page,
    registry_server,
    registry_tags,
)

pytestmark = [pytest.mark.docker, pytest.mark.redis]
TOKEN = "ghs_test0123456789abcdefTOKENtoken"
REGISTRY_PORT = int(os.environ.get("NEPHELIOS_TEST_REGISTRY_PORT", "22010"))


@pytest.fixture
def github_api() -> Iterator[FakeGitHub]:
    yield from fake_github()


@pytest.fixture
def workers(worker_env: dict[str, str], github_api: FakeGitHub) -> Iterator[Workers]:
    env = {
        **worker_env,
        "NEPHELIOS_GITHUB_TOKEN": TOKEN,
        "NEPHELIOS_GITHUB_API_URL": github_api.url,
        "NEPHELIOS_PUBLIC_URL": "http://deploy.test.localhost",
    }
    started = Workers(env)
    yield started
    started.stop_all()


@pytest.fixture
def site(
    tmp_path: Path,
    edge: int,
    worker_env: dict[str, str],
    queue_name: str,
    redis_conn: redis.Redis,
    cleanup_stack: str,
) -> Site:
    config_path = Path(worker_env["NEPHELIOS_CONFIG"])
    return Site(tmp_path, cleanup_stack, edge, config_path, queue_name, redis_conn)


def deploy_and_wait(site: Site, files: dict[str, str], version: str) -> Deployment:
    commit = site.repo.commit(files, f"release {version}")
    deployment_id = site.push(commit)
    done = wait_until(lambda: site.finished(deployment_id), 180, f"{version} to finish")
    assert done.status == "succeeded", (done.error, done.log_tail)
    wait_until(lambda: f"<h1>{version}</h1>" in site.served(), 60, f"{version} to be served")
    return done


def service_spec(client: docker.DockerClient, app: str) -> dict[str, object]:
    spec: dict[str, object] = client.api.inspect_service(f"{app}_web")["Spec"]
    return spec


def test_a_burst_of_30_pushes_ends_live_after_at_most_two_builds(
    site: Site, workers: Workers, github_api: FakeGitHub, redis_conn: redis.Redis
) -> None:
    workers.start()
    workers.start()
    started = time.monotonic()
    pushed = []
    for n in range(30):
        commit = site.repo.commit(page(f"burst-{n}"), f"burst {n}")
        pushed.append((commit, site.push(commit)))
    burst_s = time.monotonic() - started
    assert burst_s < 10, "the burst should fit in 10 s"
    last_commit, last_id = pushed[-1]

    last = wait_until(lambda: site.finished(last_id), 240, "the last push to finish")
    assert last.status == "succeeded", last.error
    wait_until(lambda: "<h1>burst-29</h1>" in site.served(), 60, "the last commit to be served")
    records = [wait_until(lambda: site.finished(d), 30, d) for _, d in pushed]  # noqa: B023
    built = [r for r in records if any(h["status"] == "building" for h in r.history)]
    assert 1 <= len(built) <= 2, [(r.status, r.error) for r in records]
    live_s = last.history[-1]["at"] - records[0].created_at
    print(f"burst of 30 in {burst_s:.1f}s, last live {live_s:.1f}s after the first push")
    assert {r.status for r in records if r not in built} == {"superseded"}
    first_superseded = next(r for r in records if r.status == "superseded")
    assert first_superseded.error.startswith("superseded by")

    # GitHub saw pending then success for the live commit, error for a replaced one.
    wait_until(lambda: "success" in github_api.statuses(last_commit), 30, "the success status")
    assert github_api.statuses(last_commit)[0] == "pending"
    assert github_api.statuses(last_commit)[-1] == "success"
    assert github_api.statuses(first_superseded.commit)[-1] == "error"
    assert all(s.headers["Authorization"] == f"Bearer {TOKEN}" for s in github_api.seen)
    assert github_api.seen[-1].path.startswith("/api/v3/repos/acme/site/statuses/")
    assert github_api.seen[-1].body["target_url"].endswith(f"/deployments/{last.id}")

    # The token is nowhere in Redis: records, logs, RQ's job hashes and registries.
    values = list(redis_text(redis_conn))
    assert len(values) > 30
    assert not [v for v in values if TOKEN.encode() in v]


def test_an_old_delivery_arriving_late_is_stale(site: Site, workers: Workers) -> None:
    workers.start()
    deploy_and_wait(site, page("one"), "one")
    middle = site.repo.commit(page("two"), "two")
    newest = site.repo.commit(page("three"), "three")

    newest_id = site.push(newest)
    middle_id = site.push(middle)

    late = wait_until(lambda: site.finished(middle_id), 180, "the late delivery to finish")
    done = wait_until(lambda: site.finished(newest_id), 180, "the newest to finish")
    assert done.status == "succeeded", done.error
    assert late.status == "stale", late.error
    assert "ancestor" in late.error
    assert "<h1>three</h1>" in site.served()


def test_a_worker_killed_mid_build_is_abandoned_and_the_app_freed(
    site: Site, workers: Workers, redis_conn: redis.Redis, github_api: FakeGitHub
) -> None:
    first, spare = workers.start(), workers.start()
    deploy_and_wait(site, page("one"), "one")

    slow = site.repo.commit({**page("slow"), **dockerfile("RUN sleep 300")}, "slow")
    slow_id = site.push(slow)
    wait_until(lambda: "sleep 300" in " ".join(site.store.read_log(slow_id)), 60, "the slow RUN")
    holder = first if workers.horse_of(first) else spare
    horse = wait_until(lambda: workers.horse_of(holder), 10, "the work horse")
    workers.kill_hard(holder, horse)
    killed_at = time.monotonic()

    abandoned = wait_until(lambda: site.finished(slow_id), 120, "the deployment to be abandoned")
    took_s = time.monotonic() - killed_at
    assert abandoned.status == "failed" and abandoned.error.startswith("abandoned"), took_s
    assert AppQueue(redis_conn, site.name).holder() is None
    wait_until(lambda: "failure" in github_api.statuses(slow), 10, "the failure status")
    assert "<h1>one</h1>" in site.served()
    print(f"abandoned after {took_s:.1f}s")

    if holder is spare:
        workers.start()
    deploy_and_wait(site, page("three"), "three")


def test_a_failed_build_keeps_the_old_version_and_its_images(
    site: Site, workers: Workers, docker_client: docker.DockerClient, github_api: FakeGitHub
) -> None:
    workers.start()
    one = deploy_and_wait(site, page("one"), "one")
    images_before = {i.id for i in engine.app_images(docker_client, site.name)}

    broken = site.repo.commit(
        {**page("broken"), **dockerfile("RUN echo 'compiling went wrong' && exit 3")}, "broken"
    )
    broken_id = site.push(broken)
    failed = wait_until(lambda: site.finished(broken_id), 120, "the failed build")
    assert failed.status == "failed"
    assert "non-zero code: 3" in failed.error
    assert "compiling went wrong" in failed.log_tail
    assert [h["status"] for h in failed.history] == ["queued", "building", "failed"]
    wait_until(lambda: "failure" in github_api.statuses(broken), 10, "the failure status")
    assert github_api.statuses(broken)[0] == "pending"
    spec = service_spec(docker_client, site.name)
    assert spec["Labels"]["nephelios.commit"] == one.commit  # type: ignore[index]
    images_after = {i.id for i in engine.app_images(docker_client, site.name)}
    assert images_after == images_before
    assert "<h1>one</h1>" in site.served()


def test_a_failed_rollout_rolls_back_and_the_old_version_keeps_answering(
    site: Site, workers: Workers, docker_client: docker.DockerClient
) -> None:
    # With a health check, Swarm holds the new task in "starting", so a version that crashes
    # at once never counts as up and the old task is never stopped (see the next test).
    site.configure(health={"path": "/", "interval_s": 1, "timeout_s": 1, "retries": 3})
    workers.start()
    deploy_and_wait(site, page("one"), "one")

    crashing = crash_on_start(site)
    deployment_id = site.push(crashing)
    answers = []
    while site.finished(deployment_id) is None:
        answers.append(site.served())
        time.sleep(0.2)
        assert len(answers) < 1500, "the rollout should end"
    failed = site.finished(deployment_id)
    assert failed is not None and failed.status == "failed"
    assert "rolled back" in failed.error or "paused" in failed.error or "no longer" in failed.error
    wait_until(lambda: rolled_back(site, docker_client, crashing), 60, "Swarm to roll back")
    # The old task served throughout, and still does, without a single miss.
    answers += [site.served() for _ in range(10)]
    assert answers and all("<h1>one</h1>" in a for a in answers), set(answers)


def test_without_a_health_check_the_deployment_log_warns(
    site: Site, workers: Workers, docker_client: docker.DockerClient
) -> None:
    workers.start()
    deploy_and_wait(site, page("one"), "one")
    crashing = crash_on_start(site)
    deployment_id = site.push(crashing)
    failed = wait_until(lambda: site.finished(deployment_id), 120, "the rollout to end")
    assert failed.status == "failed"
    assert any("warning: no health check" in line for line in site.store.read_log(failed.id))
    wait_until(lambda: rolled_back(site, docker_client, crashing), 60, "Swarm to roll back")
    # Swarm may have counted the crashing task as up for a moment and stopped the old one
    # (what the warning says); once rolled back, the old version serves again.
    wait_until(lambda: "<h1>one</h1>" in site.served(), 60, "one to be served again")


def crash_on_start(site: Site) -> str:
    """Commit a version whose container exits at once; return the commit."""
    files = {**page("crash"), **dockerfile(cmd='["sh", "-c", "exit 1"]')}
    return site.repo.commit(files, "crash on start")


def rolled_back(site: Site, client: docker.DockerClient, commit: str) -> bool:
    """Whether the service's spec no longer names `commit` (Swarm put the old one back)."""
    labels = service_spec(client, site.name).get("Labels")
    assert isinstance(labels, dict)
    return bool(labels.get("nephelios.commit") != commit)


def test_scale_env_and_prune_across_redeploys(
    site: Site, workers: Workers, docker_client: docker.DockerClient
) -> None:
    awkward = {
        "DOLLARS": "price: $5 ${HOME} $$",
        "QUOTES": 'it\'s "quoted" `ticked`',
        "NEWLINES": "line one\nline two\n",
        "UNICODE": "héllo wörld ☃ 日本",
        "SPACES": "  padded  ",
    }
    site.configure(keep_images=2, env=awkward)
    workers.start()
    deploy_and_wait(site, page("one"), "one")
    assert docker_client.services.get(f"{site.name}_web").scale(2)  # what POST /scale does
    wait_until(lambda: len(_running_tasks(docker_client, site.name)) == 2, 60, "two replicas")

    two = deploy_and_wait(site, page("two"), "two")
    assert _replicas(docker_client, site.name) == 2
    wait_until(lambda: len(_running_tasks(docker_client, site.name)) == 2, 60, "two new replicas")
    container = docker_client.containers.get(_running_tasks(docker_client, site.name)[0])
    for name, value in awkward.items():
        code, output = container.exec_run(["sh", "-c", f'printf %s "${name}"'])
        assert code == 0 and output.decode() == value, name

    site.configure(keep_images=2, env=awkward, replicas=3)
    three = deploy_and_wait(site, page("three"), "three")
    assert _replicas(docker_client, site.name) == 3
    # The prune runs after the success is recorded, once the replaced tasks have stopped.
    expected = {f"{site.name}:{three.commit[:12]}", f"{site.name}:{two.commit[:12]}"}
    wait_until(lambda: _app_tags(docker_client, site.name) == expected, 60, "the prune")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    yield from registry_server(tmp_path / "registry", REGISTRY_PORT)


def test_with_a_registry_images_are_pushed_and_deployed_from_it(
    registry: str, site: Site, workers: Workers, docker_client: docker.DockerClient
) -> None:
    site.configure(registry=registry)
    workers.start()
    one = deploy_and_wait(site, page("one"), "one")
    assert registry_tags(registry, site.name) == [one.commit[:12]]
    service = docker_client.api.inspect_service(f"{site.name}_web")
    image = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert image.startswith(f"{registry}/{site.name}:{one.commit[:12]}@sha256:")


def _app_tags(client: docker.DockerClient, app: str) -> set[str]:
    # Listed while a worker may be pruning: app_images skips an image removed meanwhile.
    return {tag for image in engine.app_images(client, app) for tag in image.tags}


def _replicas(client: docker.DockerClient, app: str) -> int:
    spec = client.api.inspect_service(f"{app}_web")["Spec"]
    return int(spec["Mode"]["Replicated"]["Replicas"])


def _running_tasks(client: docker.DockerClient, app: str) -> list[str]:
    tasks = client.api.tasks(filters={"service": f"{app}_web", "desired-state": "running"})
    return [
        t["Status"]["ContainerStatus"]["ContainerID"]
        for t in tasks
        if t["Status"]["State"] == "running" and t["Status"].get("ContainerStatus")
    ]


def redis_text(connection: redis.Redis) -> Iterator[bytes]:
    """Every value stored in the test's Redis database, whatever the key's type."""
    for key in connection.scan_iter(count=1000):
        kind = connection.type(key)
        values: list[object]
        if kind == b"string":
            values = [connection.get(key)]
        elif kind == b"list":
            values = list(connection.lrange(key, 0, -1))
        elif kind == b"hash":
            values = [f"{k!r}={v!r}" for k, v in connection.hgetall(key).items()]
        elif kind == b"set":
            values = list(connection.smembers(key))
        elif kind == b"zset":
            values = list(connection.zrange(key, 0, -1))
        else:
            values = []
        for value in values:
            yield value if isinstance(value, bytes) else str(value).encode()
