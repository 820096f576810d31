"""GitHub intake over HTTP against a real Redis: one test per rule of the webhook contract.

Bodies are built by tests/support.py in the shapes of shared/github-payloads; a Starlette
TestClient drives the endpoint in-process, except where the test needs to watch how much of
a streamed body the receiver reads (then the ASGI app is called directly).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
import redis
from rq import Queue
from starlette.applications import Starlette
from starlette.testclient import TestClient

from pipeline import intake
from pipeline.core.config import parse_config
from pipeline.jobs import Recorder, resolve_tags
from pipeline.reporting import Reporter
from pipeline.settings import Settings
from pipeline.store import Store
from tests.conftest import REDIS_URL, SPARE_REDIS_PORT
from tests.support import (
    GitRepo,
    delivery_headers,
    encode,
    form_encode,
    ping_payload,
    push_payload,
    push_tag,
    redelivered,
    release_payload,
    sign,
    state_keys,
    tag_push_payload,
    wait_until,
)
from webhooks.app import connect_redis, create_app
from webhooks.github import MAX_BODY_BYTES

pytestmark = pytest.mark.redis

SECRET = "intake-test-secret"
SHA = "c5ec2129a2a8" + "1" * 28
OTHER_SHA = "2c2d13565ac8" + "2" * 28
APPS: dict[str, Any] = {
    "site": {"repo": "acme/site"},
    "api": {"repo": "acme/mono", "paths": ["services/api", "libs/*.py"]},
    "web": {"repo": "acme/mono", "paths": ["services/web"]},
    "lib": {"repo": "acme/lib", "tags": ["v*"]},
    "libdocs": {"repo": "acme/lib"},
    "tool": {"repo": "acme/tool", "releases": True},
    "toolbeta": {"repo": "acme/tool"},
}
CONFIG = parse_config({"apps": APPS})
Response = httpx2.Response


@pytest.fixture
def settings(queue_name: str, tmp_path: Path) -> Settings:
    return Settings(webhook_secret=SECRET, queue_name=queue_name, state_dir=tmp_path)


@pytest.fixture
def client(redis_conn: redis.Redis, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, CONFIG, redis_conn)) as test_client:
        yield test_client


def post(
    client: TestClient,
    payload: dict[str, Any],
    event: str = "push",
    delivery: str | None = None,
    body: bytes | None = None,
    content_type: str = "application/json",
) -> Response:
    body = encode(payload) if body is None else body
    headers = delivery_headers(body, SECRET, event, delivery)
    headers["Content-Type"] = content_type
    return client.post("/webhooks/github", content=body, headers=headers)


def outcomes(response: Response) -> dict[str, dict[str, Any]]:
    return {entry["app"]: entry for entry in response.json()["apps"]}


def jobs(redis_conn: redis.Redis, queue_name: str) -> list[tuple[Any, Any]]:
    return [(job.func_name, job.args) for job in Queue(queue_name, connection=redis_conn).jobs]


# --- transport and signatures --------------------------------------------------------------


def test_form_encoded_delivery_is_verified_over_the_raw_form_and_queued(
    client: TestClient, redis_conn: redis.Redis, queue_name: str
) -> None:
    body = form_encode(push_payload("acme/site", SHA))
    response = post(client, {}, body=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202
    site = outcomes(response)["site"]
    assert (site["status"], site["commit"]) == ("queued", SHA)
    assert jobs(redis_conn, queue_name) == [("pipeline.jobs.deploy", (site["deployment"],))]


@pytest.mark.parametrize("header", ["wrong", "sha1", "missing"])
def test_bad_signature_is_401_without_any_digest_and_enqueues_nothing(
    client: TestClient, redis_conn: redis.Redis, header: str
) -> None:
    body = encode(push_payload("acme/site", SHA))
    headers = delivery_headers(body, SECRET)
    expected_digest = headers.pop("X-Hub-Signature-256").split("=")[1]
    if header == "wrong":
        headers["X-Hub-Signature-256"] = sign(body, "not-the-secret")
    elif header == "sha1":
        # Only the legacy header, correctly computed: still refused.
        headers["X-Hub-Signature"] = "sha1=" + "0" * 40
    response = client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 401
    assert expected_digest not in response.text
    assert sign(body, "not-the-secret").split("=")[1] not in response.text
    assert state_keys(redis_conn) == []


@pytest.mark.parametrize(
    ("body", "event", "reason"),
    [
        (b"{not json", "push", "not valid JSON"),
        (encode(push_payload("acme/site", SHA)), "", "X-GitHub-Event"),
    ],
)
def test_malformed_json_or_missing_event_is_400_with_one_line(
    client: TestClient, redis_conn: redis.Redis, body: bytes, event: str, reason: str
) -> None:
    headers = delivery_headers(body, SECRET, event)
    if not event:
        del headers["X-GitHub-Event"]
    response = client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert "\n" not in response.json()["error"]
    assert state_keys(redis_conn) == []


def call_streaming(app: Starlette, headers: dict[str, str], chunks: Iterator[bytes]) -> int:
    """POST a body chunk by chunk straight into the ASGI app; return the response status."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        chunk = next(chunks, None)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message: Any) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/github",
        "raw_path": b"/webhooks/github",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 3030),
    }
    asyncio.run(app(scope, receive, send))
    return int(next(m["status"] for m in messages if m["type"] == "http.response.start"))


class CountingBody:
    """A 40 MB body made lazily, 1 MiB at a time, counting what the receiver pulled."""

    chunk = b"x" * (1 << 20)

    def __init__(self, total_chunks: int = 40) -> None:
        self.remaining = total_chunks
        self.consumed = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.remaining == 0:
            raise StopIteration
        self.remaining -= 1
        self.consumed += len(self.chunk)
        return self.chunk


def test_body_over_25mb_is_413_without_reading_it_all(
    redis_conn: redis.Redis, settings: Settings
) -> None:
    app = create_app(settings, CONFIG, redis_conn)
    headers = delivery_headers(b"", SECRET)

    streamed = CountingBody()
    assert call_streaming(app, headers, streamed) == 413
    assert streamed.consumed <= MAX_BODY_BYTES + len(CountingBody.chunk)
    assert streamed.remaining > 0

    declared = CountingBody()
    headers["Content-Length"] = str(40 << 20)
    assert call_streaming(app, headers, declared) == 413
    assert declared.consumed == 0
    assert state_keys(redis_conn) == []


# --- which events deploy what --------------------------------------------------------------


@pytest.mark.parametrize("repository", ["acme/site", None])
def test_repository_and_organisation_pings_are_answered_200(
    client: TestClient, redis_conn: redis.Redis, repository: str | None
) -> None:
    response = post(client, ping_payload(repository), event="ping")
    assert response.status_code == 200
    expected = "Repository" if repository else "Organization"
    assert response.json()["pong"] is True
    assert response.json()["hook_type"] == expected
    assert state_keys(redis_conn) == []


def test_branch_deletion_deploys_nothing(
    client: TestClient, redis_conn: redis.Redis, queue_name: str
) -> None:
    ref = "refs/heads/dependabot/github_actions/actions/setup-go-c013"
    payload = push_payload("acme/site", "0" * 40, ref=ref, before=SHA, deleted=True)
    response = post(client, payload)
    assert response.status_code == 202
    assert outcomes(response)["site"]["status"] == "ignored"
    assert "deleted" in outcomes(response)["site"]["reason"]
    assert jobs(redis_conn, queue_name) == []


def test_tag_push_deploys_only_apps_that_deploy_tags_at_the_tagged_commit(
    client: TestClient, redis_conn: redis.Redis
) -> None:
    tag_object = "d" * 40
    response = post(client, tag_push_payload("acme/lib", "v1.2.0", tag_object, SHA))
    assert response.status_code == 202
    lib, libdocs = outcomes(response)["lib"], outcomes(response)["libdocs"]
    assert (lib["status"], lib["commit"]) == ("queued", SHA)
    deployment = Store(redis_conn).get(lib["deployment"])
    assert deployment is not None
    assert (deployment.commit, deployment.ref) == (SHA, "refs/tags/v1.2.0")
    assert libdocs["status"] == "ignored" and "does not deploy tags" in libdocs["reason"]

    unmatched = post(client, tag_push_payload("acme/lib", "nightly", tag_object, OTHER_SHA))
    assert "does not match" in outcomes(unmatched)["lib"]["reason"]


def test_head_commit_asking_to_skip_deploys_nothing(
    client: TestClient, redis_conn: redis.Redis, queue_name: str
) -> None:
    response = post(client, push_payload("acme/site", SHA, message="docs [ci skip]"))
    assert "skip" in outcomes(response)["site"]["reason"]
    assert jobs(redis_conn, queue_name) == []


def test_release_trio_deploys_the_published_tag_once(
    client: TestClient, redis_conn: redis.Redis, queue_name: str
) -> None:
    answers = {
        action: post(client, release_payload("acme/tool", action, "0.0.1"), event="release")
        for action in ("created", "published", "released")
    }
    assert all(r.status_code == 202 for r in answers.values())
    for action in ("created", "released"):
        assert "only 'published' deploys" in outcomes(answers[action])["tool"]["reason"]
    tool = outcomes(answers["published"])["tool"]
    assert (tool["status"], tool["ref"]) == ("queued", "refs/tags/0.0.1")
    assert "does not deploy releases" in outcomes(answers["published"])["toolbeta"]["reason"]

    again = post(client, release_payload("acme/tool", "published", "0.0.1"), event="release")
    assert "already queued" in outcomes(again)["tool"]["reason"]
    assert outcomes(again)["tool"]["deployment"] == tool["deployment"]
    assert jobs(redis_conn, queue_name) == [("pipeline.jobs.deploy", (tool["deployment"],))]


def test_prerelease_does_not_deploy(client: TestClient) -> None:
    payload = release_payload("acme/tool", "published", "0.1.0-rc1", prerelease=True)
    response = post(client, payload, event="release")
    assert "prerelease" in outcomes(response)["tool"]["reason"]


def test_a_release_answers_with_its_deployment_and_the_worker_resolves_the_tag_once(
    client: TestClient,
    redis_conn: redis.Redis,
    queue_name: str,
    settings: Settings,
    tmp_path: Path,
) -> None:
    repo = GitRepo(tmp_path / "tool")
    commit = repo.commit({"index.html": "v1"}, "first release")
    # Annotated tags: their own object ids differ from the commit they name.
    push_tag(repo, "0.0.1", "release 0.0.1")
    push_tag(repo, "0.0.1-again", "the same commit released twice")
    repo.commit({"index.html": "after the release"}, "later work on main")
    store = Store(redis_conn)

    answer = post(client, release_payload("acme/tool", "published", "0.0.1"), event="release")
    queued = store.get(outcomes(answer)["tool"]["deployment"])
    # The answer names the deployment itself; its commit is found by the worker.
    assert queued is not None
    assert (queued.status, queued.commit, queued.ref) == ("queued", "", "refs/tags/0.0.1")
    assert jobs(redis_conn, queue_name) == [("pipeline.jobs.deploy", (queued.id,))]

    again = post(client, release_payload("acme/tool", "published", "0.0.1-again"), event="release")
    twin = store.get(outcomes(again)["tool"]["deployment"])
    assert twin is not None
    recorder = Recorder(store, Reporter("http://127.0.0.1:9", None), CONFIG.apps["tool"])
    kept = resolve_tags(settings, recorder, str(repo.bare), [queued, twin])

    assert [d.id for d in kept] == [queued.id]
    resolved, stale = store.get(queued.id), store.get(twin.id)
    assert resolved is not None and (resolved.commit, resolved.status) == (commit, "queued")
    assert stale is not None and (stale.commit, stale.status) == (commit, "stale")
    assert f"already queued as {queued.id}" in stale.error
    # The tag's commit pushed to a branch later is the same work: not queued again.
    repeat = post(client, push_payload("acme/tool", commit))
    assert outcomes(repeat)["tool"]["deployment"] == queued.id
    assert "already queued" in outcomes(repeat)["tool"]["reason"]


def test_a_tag_that_is_not_in_the_repository_fails_its_deployment(
    client: TestClient, redis_conn: redis.Redis, settings: Settings, tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "tool")
    repo.commit({"index.html": "v1"}, "untagged work")
    answer = post(client, release_payload("acme/tool", "published", "9.9.9"), event="release")
    store = Store(redis_conn)
    queued = store.get(outcomes(answer)["tool"]["deployment"])
    assert queued is not None
    recorder = Recorder(store, Reporter("http://127.0.0.1:9", None), CONFIG.apps["tool"])

    assert resolve_tags(settings, recorder, str(repo.bare), [queued]) == []
    failed = store.get(queued.id)
    assert failed is not None and failed.status == "failed"
    assert "refs/tags/9.9.9 is not in the repository" in failed.error


def test_monorepo_push_deploys_only_apps_whose_paths_changed(
    client: TestClient, redis_conn: redis.Redis, queue_name: str
) -> None:
    payload = push_payload("acme/mono", SHA, before=OTHER_SHA, modified=("services/api/app.py",))
    payload["commits"].insert(0, {"id": OTHER_SHA, "added": ["README.md"], "removed": []})
    payload["commits"][0]["modified"] = []
    response = post(client, payload)
    assert outcomes(response)["api"]["status"] == "queued"
    assert "no changed file matches" in outcomes(response)["web"]["reason"]

    removed = push_payload("acme/mono", OTHER_SHA, before=SHA, removed=("services/web/old.css",))
    assert outcomes(post(client, removed))["web"]["status"] == "queued"
    assert len(jobs(redis_conn, queue_name)) == 2


@pytest.mark.parametrize("incomplete", ["forced", "2048 commits"])
def test_monorepo_push_with_incomplete_file_lists_deploys_and_says_why(
    client: TestClient, incomplete: str
) -> None:
    payload = push_payload("acme/mono", SHA, before=OTHER_SHA, modified=("README.md",))
    if incomplete == "forced":
        payload["forced"] = True
    else:
        payload["commits"] = payload["commits"] * 2048
    apps = outcomes(post(client, payload))
    for name in ("api", "web"):
        assert apps[name]["status"] == "queued"
        assert "file lists may be incomplete" in apps[name]["reason"]
        assert incomplete.split()[0] in apps[name]["reason"]


def test_other_events_are_answered_202_with_the_reason_per_app(
    client: TestClient, redis_conn: redis.Redis
) -> None:
    payload = {"action": "opened", "number": 2, "repository": {"full_name": "acme/site"}}
    response = post(client, payload, event="pull_request")
    assert response.status_code == 202
    assert "'pull_request' does not deploy" in outcomes(response)["site"]["reason"]
    unknown = post(client, {"action": "created"}, event="star")
    assert unknown.status_code == 202
    assert "'star' does not deploy anything" in unknown.json()["ignored"]
    assert state_keys(redis_conn) == []


def test_push_for_an_unknown_repository_says_so(client: TestClient) -> None:
    response = post(client, push_payload("someone/else", SHA))
    assert response.status_code == 202
    assert response.json()["ignored"] == "no app is configured for someone/else"


# --- exactly once ------------------------------------------------------------------------


def test_replayed_delivery_is_a_duplicate_and_queues_nothing(
    client: TestClient, redis_conn: redis.Redis, queue_name: str
) -> None:
    delivery = "72d3162e-cc78-11e3-81ab-4c9"
    again = redelivered(partial(post, client, push_payload("acme/site", SHA), delivery=delivery))
    assert "accepted before" in outcomes(again)["site"]["reason"]
    assert len(jobs(redis_conn, queue_name)) == 1


def test_same_commit_from_two_delivery_ids_is_queued_once(
    client: TestClient, redis_conn: redis.Redis, queue_name: str
) -> None:
    first = outcomes(post(client, push_payload("acme/site", SHA)))["site"]
    second = outcomes(post(client, push_payload("acme/site", SHA)))["site"]
    assert first["status"] == "queued"
    assert second["status"] == "ignored" and "already queued" in second["reason"]
    assert second["deployment"] == first["deployment"]
    assert len(jobs(redis_conn, queue_name)) == 1


def test_same_commit_as_branch_and_tag_is_queued_once(
    client: TestClient, redis_conn: redis.Redis, queue_name: str
) -> None:
    branch = outcomes(post(client, push_payload("acme/lib", SHA)))["lib"]
    queued = jobs(redis_conn, queue_name)
    tag = outcomes(post(client, tag_push_payload("acme/lib", "v2.0.0", "e" * 40, SHA)))["lib"]
    assert "already queued" in tag["reason"]
    assert tag["deployment"] == branch["deployment"]
    assert jobs(redis_conn, queue_name) == queued


def test_failed_enqueue_undoes_claim_and_delivery_so_a_redelivery_queues(
    client: TestClient, redis_conn: redis.Redis, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("Redis went away")

    with monkeypatch.context() as patch:
        patch.setattr(intake, "enqueue_deployment", refuse)
        failed = post(client, push_payload("acme/site", SHA), delivery="retry-me")
    assert failed.status_code == 503
    assert redis_conn.keys("nephelios:claim:*") == []
    retried = post(client, push_payload("acme/site", SHA), delivery="retry-me")
    assert retried.status_code == 202
    assert outcomes(retried)["site"]["status"] == "queued"
    assert len(jobs(redis_conn, queue_name)) == 1


@pytest.fixture
def spare_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own on SPARE_REDIS_PORT; yields its URL and process."""
    process = start_redis(tmp_path)
    yield f"redis://127.0.0.1:{SPARE_REDIS_PORT}/0", process
    process.terminate()
    process.wait(timeout=10)


def start_redis(tmp_path: Path) -> subprocess.Popen[bytes]:
    argv = ["redis-server", "--port", str(SPARE_REDIS_PORT), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    probe = redis.Redis(port=SPARE_REDIS_PORT, socket_connect_timeout=0.5)
    wait_until(lambda: _answers(probe), 10, "the spare redis-server to answer")
    return process


def _answers(connection: redis.Redis) -> bool:
    try:
        return bool(connection.ping())
    except redis.RedisError:
        return False


def test_redis_down_is_503_and_the_receiver_recovers_when_it_is_back(
    spare_redis: tuple[str, subprocess.Popen[bytes]], settings: Settings, tmp_path: Path
) -> None:
    url, process = spare_redis
    with TestClient(create_app(settings, CONFIG, connect_redis(url))) as test_client:
        assert post(test_client, push_payload("acme/site", SHA)).status_code == 202

        process.terminate()
        process.wait(timeout=10)
        down = post(test_client, push_payload("acme/site", OTHER_SHA), delivery="while-down")
        assert down.status_code == 503
        assert "digest" not in down.text and SECRET not in down.text

        restarted = start_redis(tmp_path)
        try:
            back = post(test_client, push_payload("acme/site", OTHER_SHA), delivery="while-down")
            assert back.status_code == 202
            assert outcomes(back)["site"]["status"] == "queued"
        finally:
            restarted.terminate()
            restarted.wait(timeout=10)


# --- the acceptance path stays fast --------------------------------------------------------


class CallWatch:
    """Records process launches and non-Redis connections while `active` (an audit hook)."""

    def __init__(self) -> None:
        self.active = False
        self.seen: list[str] = []
        sys.addaudithook(self.hook)

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event in ("subprocess.Popen", "os.posix_spawn", "os.exec", "os.system"):
            self.seen.append(f"{event} {args[0]!r}")
        elif event == "socket.connect" and args[1] != REDIS_ADDRESS:
            self.seen.append(f"connect {args[1]!r}")
        elif event == "socket.getaddrinfo" and args[0] not in ("127.0.0.1", "localhost"):
            self.seen.append(f"resolve {args[0]!r}")


_redis_url = urlsplit(REDIS_URL)
REDIS_ADDRESS = (_redis_url.hostname or "127.0.0.1", _redis_url.port or 6379)
CALL_WATCH = CallWatch()


def test_valid_push_is_answered_without_git_docker_or_network_and_fast(
    client: TestClient, redis_conn: redis.Redis
) -> None:
    timings_s = []
    CALL_WATCH.active = True
    try:
        for index in range(50):
            sha = f"{index + 1:040x}"
            started = time.perf_counter()
            response = post(client, push_payload("acme/site", sha))
            timings_s.append(time.perf_counter() - started)
            assert outcomes(response)["site"]["status"] == "queued"
    finally:
        CALL_WATCH.active = False
    assert CALL_WATCH.seen == []
    timings_s.sort()
    # GitHub waits 10 s; the answer should take milliseconds.
    assert timings_s[len(timings_s) // 2] < 0.05, timings_s
    median_ms, max_ms = timings_s[25] * 1000, timings_s[-1] * 1000
    print(f"valid push answered: median {median_ms:.1f} ms, max {max_ms:.1f} ms")
