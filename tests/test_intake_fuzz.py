"""Random headers and bodies thrown at the webhook endpoint (hypothesis), against a real Redis.

Whatever arrives: no 5xx (Redis is up, so not even 503), and without a valid signature
nothing at all is written to Redis, so nothing can be enqueued.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rq import Queue
from starlette.testclient import TestClient

from pipeline.core.config import parse_config
from pipeline.settings import Settings
from tests.support import (
    encode,
    form_encode,
    ping_payload,
    push_payload,
    release_payload,
    sign,
    state_keys,
    tag_push_payload,
)
from webhooks.app import create_app

pytestmark = pytest.mark.redis

SECRET = "fuzz-secret"
CONFIG = parse_config(
    {
        "apps": {
            "site": {"repo": "acme/site", "branch": "*"},
            "api": {"repo": "acme/site", "paths": ["api"], "tags": ["v*"], "releases": True},
        }
    }
)
ASCII = st.characters(min_codepoint=32, max_codepoint=126)
HEX_SHA = st.text(alphabet="0123456789abcdef", min_size=40, max_size=40)
ANY_TEXT = st.text(max_size=30)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
REPOS = st.sampled_from(["acme/site", "ACME/Site", "other/repo"])


def _mutated(base: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A realistic body with one top-level field replaced by any JSON value, or none."""
    return st.tuples(
        base,
        st.sampled_from(
            [
                "",
                "ref",
                "after",
                "commits",
                "head_commit",
                "repository",
                "release",
                "action",
                "deleted",
            ]
        ),
        JSON,
    ).map(lambda t: {**t[0], t[1]: t[2]} if t[1] else t[0])


PAYLOADS = st.one_of(
    _mutated(
        st.builds(
            push_payload,
            REPOS,
            HEX_SHA,
            st.sampled_from(["refs/heads/main", "refs/tags/v1", "refs/pull/1/head", "main"]),
            ANY_TEXT,
        )
    ),
    _mutated(st.builds(tag_push_payload, REPOS, ANY_TEXT, HEX_SHA, HEX_SHA)),
    _mutated(
        st.builds(
            release_payload,
            REPOS,
            st.sampled_from(["created", "published", "released", "edited"]),
            ANY_TEXT,
        )
    ),
    st.builds(ping_payload, st.none() | REPOS),
    st.dictionaries(ANY_TEXT, JSON, max_size=5),
)
EVENTS = st.sampled_from(["push", "release", "ping", "pull_request", "create"]) | st.text(
    ASCII, max_size=20
)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "", "x/y; q=1"]
)
SIGNATURES = st.sampled_from(["valid", "missing", "wrong", "sha1-only", "garbage"])


@pytest.fixture
def client(redis_conn: redis.Redis, queue_name: str, tmp_path: Path) -> Iterator[TestClient]:
    app_settings = Settings(webhook_secret=SECRET, queue_name=queue_name, state_dir=tmp_path)
    with TestClient(create_app(app_settings, CONFIG, redis_conn)) as test_client:
        yield test_client


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[dict[str, str], bytes, str]:
    payload = draw(PAYLOADS)
    encoding = draw(st.sampled_from(["json", "form", "raw"]))
    if encoding == "raw":
        body = draw(st.binary(max_size=200))
    else:
        body = form_encode(payload) if encoding == "form" else encode(payload)
    mode = draw(SIGNATURES)
    headers = {
        "Content-Type": draw(CONTENT_TYPES),
        "X-GitHub-Event": draw(EVENTS),
        "X-GitHub-Delivery": draw(st.uuids().map(str) | st.text(ASCII, max_size=40)),
    }
    if mode == "valid":
        headers["X-Hub-Signature-256"] = sign(body, SECRET)
    elif mode == "wrong":
        headers["X-Hub-Signature-256"] = sign(body, SECRET + "x")
    elif mode == "sha1-only":
        headers["X-Hub-Signature"] = "sha1=" + "0" * 40
    elif mode == "garbage":
        headers["X-Hub-Signature-256"] = draw(st.text(ASCII, max_size=80))
    return headers, body, mode


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(delivery=deliveries())
def test_random_deliveries_never_5xx_and_unsigned_ones_never_enqueue(
    client: TestClient,
    redis_conn: redis.Redis,
    queue_name: str,
    delivery: tuple[dict[str, str], bytes, str],
) -> None:
    headers, body, mode = delivery
    keys_before = len(state_keys(redis_conn))
    queued_before = Queue(queue_name, connection=redis_conn).count

    response = client.post("/webhooks/github", content=body, headers=headers)

    event(f"{mode} -> {response.status_code}")
    assert response.status_code < 500, response.text
    if mode != "valid":
        assert response.status_code == 401
        assert len(state_keys(redis_conn)) == keys_before
        assert Queue(queue_name, connection=redis_conn).count == queued_before
