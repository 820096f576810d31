"""Parsing deliveries and deciding which apps a push deploys (pure, no HTTP)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from pipeline.core.config import parse_config
from pipeline.core.github import Delivery, Push, plan_push
from pipeline.errors import WebhookError
from tests.support import encode, push_payload

SHA = "a" * 40
CONFIG = parse_config(
    {
        "apps": {
            "site": {"repo": "acme/site", "branch": "main"},
            "preview": {"repo": "acme/site", "branch": "feature/*"},
            "other": {"repo": "acme/other"},
        }
    }
)


def delivery(payload: dict, content_type: str = "application/json") -> Delivery:  # type: ignore[type-arg]
    body = encode(payload)
    if content_type.startswith("application/x-www-form-urlencoded"):
        body = urlencode({"payload": body.decode()}).encode()
    headers = {"x-github-event": "push", "x-github-delivery": "d-1", "content-type": content_type}
    return Delivery.from_request(headers, body)


def decide(payload: dict) -> dict[str, tuple[bool, str]]:  # type: ignore[type-arg]
    push = Push.from_delivery(delivery(payload))
    return {d.app: (d.queue, d.reason) for d in plan_push(push, CONFIG.apps.values())}


def test_push_to_branch_queues_only_matching_apps_of_that_repository() -> None:
    result = decide(push_payload("acme/site", SHA))
    assert result == {"site": (True, "queued"), "preview": (False, result["preview"][1])}
    assert "does not match" in result["preview"][1]


def test_branch_globs_match_slashes() -> None:
    result = decide(push_payload("acme/site", SHA, ref="refs/heads/feature/login"))
    assert result["preview"] == (True, "queued")


def test_form_encoded_delivery_parses_like_json() -> None:
    payload = push_payload("acme/site", SHA)
    parsed = delivery(payload, "application/x-www-form-urlencoded")
    assert parsed.payload == payload


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (push_payload("acme/site", "0" * 40, deleted=True), "deleted"),
        (push_payload("acme/site", SHA, ref="refs/tags/v1.0"), "does not deploy tags"),
        (push_payload("acme/site", SHA, message="typo [skip ci]"), "skip"),
        (push_payload("acme/site", SHA, message="wip\n\n[Skip Deploy]"), "skip"),
        (push_payload("acme/site", SHA, message="[no deploy] docs"), "skip"),
    ],
)
def test_pushes_that_deploy_nothing(payload: dict, reason: str) -> None:  # type: ignore[type-arg]
    queued, why = decide(payload)["site"]
    assert not queued
    assert reason in why


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"x-github-delivery": "d"}, b"{}"),
        ({"x-github-event": "push"}, b"{}"),
        ({"x-github-event": "push", "x-github-delivery": "d"}, b"{not json"),
        ({"x-github-event": "push", "x-github-delivery": "d"}, b"[1, 2]"),
        ({"x-github-event": "push", "x-github-delivery": "d", "content-type": "text/plain"}, b"{}"),
        (
            {
                "x-github-event": "push",
                "x-github-delivery": "d",
                "content-type": "application/x-www-form-urlencoded",
            },
            b"nopayload=1",
        ),
    ],
)
def test_malformed_deliveries_are_refused(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(WebhookError):
        Delivery.from_request(headers, body)


def test_push_with_a_non_hex_after_is_refused() -> None:
    with pytest.raises(WebhookError):
        Push.from_delivery(delivery(push_payload("acme/site", "--upload-pack=touch /tmp/x")))
