"""GitHub webhook deliveries: signature check, parsing, and which apps an event deploys.

Pure functions over bytes, header mappings and config; no HTTP framework, no Redis. The
receiver reads the raw body once, calls `verify_signature`, then `Delivery.from_request`,
then `plan_push`, `plan_release` or `plan_other`, which return one `Decision` per app of the
repository (queue a commit or a release tag, or ignore with a reason), and acts on them.

Rules: deletions and skip markers deploy nothing; a tag push deploys only apps with matching
`tags`; a release deploys apps with `releases` on `published` only; an app with `paths`
deploys when a listed file matches, or when the lists may be incomplete (safe side).

Follows https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
and https://docs.github.com/en/webhooks/webhook-events-and-payloads#push
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from pipeline.core.config import App
from pipeline.errors import InvalidSignature, WebhookError

SHA_RE = re.compile(r"^[0-9a-f]{40}\Z")
ZERO_SHA = "0" * 40
DELIVERY_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,100}\Z")
EVENT_RE = re.compile(r"^[a-z_]{1,64}\Z")
# The markers GitHub Actions honours, plus the deploy-specific ones users ask for.
SKIP_RE = re.compile(
    r"\[(?:skip[ -](?:ci|deploy|actions)|(?:ci|deploy|actions)[ -]skip|no[ -]ci|no[ -]deploy)\]",
    re.IGNORECASE,
)


def verify_signature(body: bytes, signature_256: str | None, secret: str) -> None:
    """Raise InvalidSignature unless `signature_256` is `sha256=<hmac of body>`.

    The comparison is constant-time; the computed digest never leaves this function.
    """
    if not secret:
        raise InvalidSignature("webhook secret is not configured")
    if not signature_256:
        raise InvalidSignature("missing X-Hub-Signature-256 header")
    scheme, _, digest = signature_256.partition("=")
    if scheme != "sha256" or not digest:
        raise InvalidSignature("X-Hub-Signature-256 must look like sha256=<hex>")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest.strip().lower()):
        raise InvalidSignature("signature does not match")


@dataclass(frozen=True)
class Delivery:
    """One webhook request GitHub sent: its id, event name and decoded JSON payload."""

    delivery_id: str
    event: str
    payload: Mapping[str, Any]

    @classmethod
    def from_request(cls, headers: Mapping[str, str], body: bytes) -> Delivery:
        """Build a delivery from lower-cased headers and the (already verified) raw body."""
        event = headers.get("x-github-event", "")
        if not EVENT_RE.match(event):
            raise WebhookError("missing or malformed X-GitHub-Event header")
        delivery_id = headers.get("x-github-delivery", "")
        if not DELIVERY_ID_RE.match(delivery_id):
            raise WebhookError("missing or malformed X-GitHub-Delivery header")
        payload = _decode_body(headers.get("content-type", ""), body)
        return cls(delivery_id=delivery_id, event=event, payload=payload)

    @property
    def repository(self) -> str | None:
        repo = self.payload.get("repository")
        if isinstance(repo, dict) and isinstance(repo.get("full_name"), str):
            return str(repo["full_name"])
        return None


def _decode_body(content_type: str, body: bytes) -> Mapping[str, Any]:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as exc:
            raise WebhookError("form body is not valid url-encoding") from exc
        values = fields.get("payload")
        if not values or len(values) != 1:
            raise WebhookError("form body must carry exactly one 'payload' field")
        text: str | bytes = values[0]
    elif media_type in ("application/json", ""):
        text = body
    else:
        raise WebhookError(f"unsupported content type {media_type!r}")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WebhookError("body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise WebhookError("payload must be a JSON object")
    return payload


# GitHub lists at most 2048 commits in a push payload
# (https://docs.github.com/en/webhooks/webhook-events-and-payloads#push), and a comparison
# shows at most 3000 files; at either size the file lists may be cut short.
MAX_LISTED_COMMITS = 2048
MAX_LISTED_FILES = 3000
FILE_LIST_KINDS = ("added", "removed", "modified")


@dataclass(frozen=True)
class Push:
    """The fields of a push event that deciding needs.

    `commit` is what a deploy builds: `after` for a branch, and for a tag the commit it
    points to (`head_commit.id`), since `after` of an annotated tag is the tag object.
    `paths_unknown` says why the listed files may not cover everything the push changed.
    """

    repository: str
    ref: str
    commit: str
    deleted: bool
    head_message: str
    changed_paths: frozenset[str] = field(default_factory=frozenset)
    paths_unknown: str = ""

    @classmethod
    def from_delivery(cls, delivery: Delivery) -> Push:
        payload = delivery.payload
        repository = delivery.repository
        ref = payload.get("ref")
        after = payload.get("after")
        if repository is None or not isinstance(ref, str) or not isinstance(after, str):
            raise WebhookError("push payload lacks repository.full_name, ref or after")
        if not SHA_RE.match(after):
            raise WebhookError("push payload 'after' is not a 40-hex commit id")
        head = payload.get("head_commit")
        head = head if isinstance(head, dict) else {}
        message = head.get("message", "")
        head_id = head.get("id")
        commit = after
        if ref.startswith("refs/tags/") and isinstance(head_id, str) and SHA_RE.match(head_id):
            commit = head_id
        return cls(
            repository=repository,
            ref=ref,
            commit=commit,
            deleted=bool(payload.get("deleted")) or after == ZERO_SHA,
            head_message=message if isinstance(message, str) else "",
            changed_paths=frozenset(_changed_paths(payload.get("commits"))),
            paths_unknown=_why_paths_unknown(payload),
        )

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    @property
    def tag(self) -> str | None:
        return self.ref.removeprefix("refs/tags/") if self.ref.startswith("refs/tags/") else None


def _changed_paths(commits: object) -> Iterable[str]:
    if not isinstance(commits, list):
        return
    for commit in commits:
        if not isinstance(commit, dict):
            continue
        for kind in FILE_LIST_KINDS:
            paths = commit.get(kind)
            if isinstance(paths, list):
                yield from (p for p in paths if isinstance(p, str))


def _why_paths_unknown(payload: Mapping[str, Any]) -> str:
    """Why the payload's file lists may miss a change; empty when they are complete."""
    commits = payload.get("commits")
    if not isinstance(commits, list) or not commits:
        return "the push lists no commits"
    if payload.get("forced"):
        # A force push can drop commits; what they changed shows in no listed commit.
        return "a forced push can change files no listed commit shows"
    if payload.get("created"):
        return "a new ref lists only commits new to the repository"
    if len(commits) >= MAX_LISTED_COMMITS:
        return f"GitHub lists at most {MAX_LISTED_COMMITS} commits of a push"
    for commit in commits:
        lists = [commit.get(kind) for kind in FILE_LIST_KINDS] if isinstance(commit, dict) else []
        listed = [paths for paths in lists if isinstance(paths, list)]
        if not listed or len(listed) != len(lists):
            return "a listed commit carries no file lists"
        if sum(len(paths) for paths in listed) >= MAX_LISTED_FILES:
            return f"a commit lists {MAX_LISTED_FILES} or more files, where GitHub cuts lists"
    return ""


def path_matches(path: str, globs: Iterable[str]) -> bool:
    """A glob matches a path as fnmatch does (`*` crosses `/`), or names a folder above it."""
    for glob in globs:
        if fnmatch.fnmatchcase(path, glob) or path.startswith(glob.rstrip("/") + "/"):
            return True
    return False


@dataclass(frozen=True)
class Decision:
    """What a delivery means for one app: queue `commit` of `ref`, or ignore with a reason.

    A release decision has `ref` (the tag) but no `commit`: GitHub does not send the tagged
    commit, and resolving it is a git call that does not belong in the request. Its `claim`
    names the release as well as the tag, so that the same release is queued once while a
    new release of a moved (or first missing) tag is not refused as a repeat.
    """

    app: str
    queue: bool
    reason: str
    commit: str | None = None
    ref: str | None = None
    claim: str | None = None


def _ignore(app: App, reason: str) -> Decision:
    return Decision(app=app.name, queue=False, reason=reason)


# An app made by the admin API from a repository on this host has no GitHub repository; it
# gets `local/<app name>` as a placeholder, which must never match a delivery (a signed
# push could name it).
PLACEHOLDER_OWNER = "local"


def placeholder_repo(app_name: str) -> str:
    return f"{PLACEHOLDER_OWNER}/{app_name}"


def is_placeholder(app: App) -> bool:
    return app.git_url is not None and app.repo == placeholder_repo(app.name)


def apps_of(repository: str, apps: Iterable[App]) -> list[App]:
    wanted = repository.lower()
    return [app for app in apps if app.repo.lower() == wanted and not is_placeholder(app)]


def plan_push(push: Push, apps: Iterable[App]) -> list[Decision]:
    """Decide, for every app built from the pushed repository, whether this push deploys it."""
    return [_decide(push, app) for app in apps_of(push.repository, apps)]


def _decide(push: Push, app: App) -> Decision:
    if push.deleted:
        return _ignore(app, "the ref was deleted")
    if push.tag is not None:
        return _decide_tag(push, push.tag, app)
    branch = push.branch
    if branch is None:
        return _ignore(app, f"{push.ref} is neither a branch nor a tag")
    if not fnmatch.fnmatchcase(branch, app.branch):
        return _ignore(app, f"branch {branch!r} does not match {app.branch!r}")
    if SKIP_RE.search(push.head_message):
        return _ignore(app, "the head commit asks to skip deploys")
    reason = "queued"
    if app.paths:
        if push.paths_unknown:
            reason = f"queued: file lists may be incomplete ({push.paths_unknown})"
        elif not any(path_matches(path, app.paths) for path in push.changed_paths):
            return _ignore(app, f"no changed file matches paths {list(app.paths)}")
    return Decision(app.name, queue=True, reason=reason, commit=push.commit, ref=push.ref)


def _decide_tag(push: Push, tag: str, app: App) -> Decision:
    # A tag names a release on purpose, so `paths` does not filter it: tag pushes usually
    # list no commits at all.
    if not app.tags:
        return _ignore(app, f"tag {tag!r}: this app does not deploy tags")
    if not any(fnmatch.fnmatchcase(tag, glob) for glob in app.tags):
        return _ignore(app, f"tag {tag!r} does not match {list(app.tags)}")
    if SKIP_RE.search(push.head_message):
        return _ignore(app, "the tagged commit asks to skip deploys")
    return Decision(app.name, queue=True, reason="queued", commit=push.commit, ref=push.ref)


@dataclass(frozen=True)
class Release:
    """The fields of a release event that deciding needs."""

    repository: str
    action: str
    release_id: int
    tag: str
    draft: bool
    prerelease: bool

    @classmethod
    def from_delivery(cls, delivery: Delivery) -> Release:
        release = delivery.payload.get("release")
        action = delivery.payload.get("action")
        if delivery.repository is None or not isinstance(release, dict):
            raise WebhookError("release payload lacks repository.full_name or release")
        release_id, tag = release.get("id"), release.get("tag_name")
        if not isinstance(action, str) or not isinstance(tag, str) or not tag:
            raise WebhookError("release payload lacks action or release.tag_name")
        if not isinstance(release_id, int) or isinstance(release_id, bool):
            raise WebhookError("release payload lacks a numeric release.id")
        return cls(
            repository=delivery.repository,
            action=action,
            release_id=release_id,
            tag=tag,
            draft=bool(release.get("draft")),
            prerelease=bool(release.get("prerelease")),
        )


# git's ref rules, narrowed: no leading '-', no '..', no control or shell-special characters.
TAG_NAME_RE = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/+@-]{1,200}\Z")


def plan_release(release: Release, apps: Iterable[App]) -> list[Decision]:
    """Only `published` deploys, so the created/published/released trio deploys once."""
    return [_decide_release(release, app) for app in apps_of(release.repository, apps)]


def _decide_release(release: Release, app: App) -> Decision:
    if not app.releases:
        return _ignore(app, "this app does not deploy releases")
    if release.action != "published":
        return _ignore(app, f"release {release.action!r}: only 'published' deploys")
    if release.draft:
        return _ignore(app, "the release is a draft")
    if release.prerelease:
        return _ignore(app, "the release is a prerelease; only full releases deploy")
    if not TAG_NAME_RE.match(release.tag):
        # Checked only here: a delivery that deploys nothing is not refused for its tag.
        return _ignore(app, f"tag {release.tag[:80]!r} is not a tag name that can be deployed")
    ref = f"refs/tags/{release.tag}"
    claim = f"{ref}@release:{release.release_id}"
    return Decision(app.name, queue=True, reason="queued", ref=ref, claim=claim)


def plan_other(delivery: Delivery, apps: Iterable[App]) -> list[Decision]:
    """Events that never deploy: every app of the repository, ignored with the reason."""
    reason = f"event {delivery.event!r} does not deploy anything"
    repository = delivery.repository
    return [_ignore(app, reason) for app in apps_of(repository, apps)] if repository else []
