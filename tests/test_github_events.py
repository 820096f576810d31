"""Parsing deliveries and deciding which apps a push deploys (pure, no HTTP)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from pipeline.core.admin import parse_create
from pipeline.core.config import Platform, parse_config
from pipeline.core.github import Delivery, Push, Release, path_matches, plan_push, plan_release
from pipeline.errors import WebhookError
from tests.support import encode, push_payload, release_payload, tag_push_payload

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


# --- intake: tags, releases and monorepo paths (pure) ---------------------------------------


def test_annotated_tag_push_deploys_the_tagged_commit_not_the_tag_object() -> None:
    push = Push.from_delivery(delivery(tag_push_payload("acme/lib", "v1", "d" * 40, SHA)))
    assert (push.tag, push.commit) == ("v1", SHA)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"commits": []}, "lists no commits"),
        ({"forced": True}, "forced"),
        ({"created": True}, "new ref"),
        ({"commits": [{"id": SHA, "message": "m"}] * 2048}, "2048"),
        ({"commits": [{"id": SHA, "message": "from GitHub Actions, no file lists"}]}, "no file"),
        (
            {"commits": [{"added": [f"f{i}" for i in range(3000)], "removed": [], "modified": []}]},
            "3000",
        ),
    ],
)
def test_file_lists_that_may_be_incomplete_say_why(change: dict, why: str) -> None:  # type: ignore[type-arg]
    payload = {**push_payload("acme/mono", SHA, before="b" * 40, modified=("a.py",)), **change}
    assert why in Push.from_delivery(delivery(payload)).paths_unknown


def test_complete_file_lists_are_trusted() -> None:
    payload = push_payload("acme/mono", SHA, before="b" * 40, modified=("a.py",))
    push = Push.from_delivery(delivery(payload))
    assert (push.paths_unknown, push.changed_paths) == ("", frozenset({"a.py"}))


@pytest.mark.parametrize(
    ("path", "globs", "matches"),
    [
        ("services/api/main.py", ("services/api",), True),
        ("services/api/main.py", ("services/api/",), True),
        ("services/apiary/x.py", ("services/api",), False),
        ("libs/deep/util.py", ("libs/*.py",), True),
        ("README.md", ("*.py", "docs"), False),
    ],
)
def test_path_globs(path: str, globs: tuple[str, ...], matches: bool) -> None:
    assert path_matches(path, globs) is matches


RELEASE_APPS = parse_config(
    {"apps": {"tool": {"repo": "acme/tool", "releases": True}, "plain": {"repo": "acme/tool"}}}
).apps.values()


def release_decisions(payload: dict) -> dict[str, tuple[bool, str]]:  # type: ignore[type-arg]
    headers = {"x-github-event": "release", "x-github-delivery": "d-2"}
    release = Release.from_delivery(Delivery.from_request(headers, encode(payload)))
    return {d.app: (d.queue, d.reason) for d in plan_release(release, RELEASE_APPS)}


def test_published_release_queues_its_tag_for_apps_that_deploy_releases() -> None:
    decisions = release_decisions(release_payload("acme/tool", "published", "0.0.1"))
    assert decisions["tool"] == (True, "queued")
    assert decisions["plain"] == (False, "this app does not deploy releases")


@pytest.mark.parametrize(
    ("action", "draft", "prerelease", "reason"),
    [
        ("created", False, False, "only 'published'"),
        ("released", False, False, "only 'published'"),
        ("published", True, False, "draft"),
        ("published", False, True, "prerelease"),
    ],
)
def test_releases_that_deploy_nothing(
    action: str, draft: bool, prerelease: bool, reason: str
) -> None:
    payload = release_payload("acme/tool", action, "0.0.1", prerelease=prerelease)
    payload["release"]["draft"] = draft
    queued, why = release_decisions(payload)["tool"]
    assert not queued and reason in why


@pytest.mark.parametrize("tag", ["--upload-pack=x", "a..b", "v1;rm", "v1\n", "tü", "a b"])
def test_a_release_of_an_unusable_tag_name_deploys_nothing(tag: str) -> None:
    # Ignored with the reason, not refused: the same delivery may concern other apps.
    queued, why = release_decisions(release_payload("acme/tool", "published", tag))["tool"]
    assert not queued and "is not a tag name that can be deployed" in why


def test_a_release_without_a_tag_name_is_refused() -> None:
    with pytest.raises(WebhookError):
        release_decisions(release_payload("acme/tool", "published", ""))


def test_a_new_release_of_a_moved_tag_is_not_a_repeat_of_the_old_one() -> None:
    headers = {"x-github-event": "release", "x-github-delivery": "d-3"}
    claims = set()
    for release_id in (1, 2):
        payload = release_payload("acme/tool", "published", "1.0", release_id=release_id)
        release = Release.from_delivery(Delivery.from_request(headers, encode(payload)))
        claims.add(plan_release(release, RELEASE_APPS)[0].claim)
    assert claims == {"refs/tags/1.0@release:1", "refs/tags/1.0@release:2"}


def test_the_placeholder_repository_of_a_local_app_never_matches_a_push() -> None:
    body = {"app_name": "mine", "app_type": "static", "github_url": "/srv/git/mine.git"}
    local = parse_create(body, Platform(), max_replicas=10).app
    assert local.repo == "local/mine"  # what a signed push could name
    push = Push.from_delivery(delivery(push_payload("local/mine", SHA)))
    assert plan_push(push, [*CONFIG.apps.values(), local]) == []
