"""GitHub webhook deliveries: signature check, parsing, and which apps a push deploys.

Pure functions over bytes, header mappings and config; no HTTP framework, no Redis. The
receiver reads the raw body once, calls `verify_signature`, then `parse_delivery`, then
`plan_push` for each app, and acts on the decisions.

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

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
ZERO_SHA = "0" * 40
DELIVERY_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,100}$")
EVENT_RE = re.compile(r"^[a-z_]{1,64}$")
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


@dataclass(frozen=True)
class Push:
    """The fields of a push event that deciding needs."""

    repository: str
    ref: str
    after: str
    deleted: bool
    head_message: str
    changed_paths: frozenset[str] = field(default_factory=frozenset)

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
        message = head.get("message", "") if isinstance(head, dict) else ""
        return cls(
            repository=repository,
            ref=ref,
            after=after,
            deleted=bool(payload.get("deleted")) or after == ZERO_SHA,
            head_message=message if isinstance(message, str) else "",
            changed_paths=frozenset(_changed_paths(payload.get("commits"))),
        )

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None


def _changed_paths(commits: object) -> Iterable[str]:
    if not isinstance(commits, list):
        return
    for commit in commits:
        if not isinstance(commit, dict):
            continue
        for kind in ("added", "removed", "modified"):
            paths = commit.get(kind)
            if isinstance(paths, list):
                yield from (p for p in paths if isinstance(p, str))


@dataclass(frozen=True)
class Decision:
    """What a delivery means for one app: queue `commit` of `ref`, or ignore with a reason."""

    app: str
    queue: bool
    reason: str
    commit: str | None = None
    ref: str | None = None


def plan_push(push: Push, apps: Iterable[App]) -> list[Decision]:
    """Decide, for every app built from the pushed repository, whether this push deploys it."""
    decisions = []
    for app in apps:
        if app.repo.lower() != push.repository.lower():
            continue
        decisions.append(_decide(push, app))
    return decisions


def _decide(push: Push, app: App) -> Decision:
    def ignore(reason: str) -> Decision:
        return Decision(app=app.name, queue=False, reason=reason)

    if push.deleted:
        return ignore("the ref was deleted")
    branch = push.branch
    if branch is None:
        return ignore(f"{push.ref} is not a branch")
    if not fnmatch.fnmatchcase(branch, app.branch):
        return ignore(f"branch {branch!r} does not match {app.branch!r}")
    if SKIP_RE.search(push.head_message):
        return ignore("the head commit asks to skip deploys")
    return Decision(app=app.name, queue=True, reason="queued", commit=push.after, ref=push.ref)
