"""Deployment records and webhook delivery ids in Redis.

Keys (all under `nephelios:`): `deployment:<id>` holds the record as JSON, `log:<id>` the
build and rollout log as a capped list of lines, `app:<name>:deployments` the newest ids
of an app, `delivery:<id>` marks a delivery id as accepted for a week, and
`claim:<app>:<commit>` (or `claim:<app>:refs/tags/<tag>` for a release) marks work queued for
that app as long.
"""

from __future__ import annotations

import json
import logging

import redis

from pipeline.core.deployment import Deployment

log = logging.getLogger(__name__)

PREFIX = "nephelios:"
LOG_MAX_LINES = 2000
LOG_MAX_LINE_CHARS = 2000
KEEP_DEPLOYMENTS = 50
# GitHub lets a user redeliver for several days; remember accepted ids comfortably longer.
DELIVERY_TTL_S = 8 * 24 * 3600


class Store:
    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    def save(self, deployment: Deployment) -> None:
        self.redis.set(f"{PREFIX}deployment:{deployment.id}", json.dumps(deployment.to_dict()))

    def create(self, deployment: Deployment) -> None:
        """Save a new record and forget the app's records beyond the newest few."""
        key = f"{PREFIX}app:{deployment.app}:deployments"
        pipe = self.redis.pipeline()
        pipe.set(f"{PREFIX}deployment:{deployment.id}", json.dumps(deployment.to_dict()))
        pipe.lpush(key, deployment.id)
        pipe.lrange(key, KEEP_DEPLOYMENTS, -1)
        pipe.ltrim(key, 0, KEEP_DEPLOYMENTS - 1)
        old_ids = pipe.execute()[2]
        for old in old_ids:
            old_id = _text(old)
            self.redis.delete(f"{PREFIX}deployment:{old_id}", f"{PREFIX}log:{old_id}")

    def get(self, deployment_id: str) -> Deployment | None:
        raw = self.redis.get(f"{PREFIX}deployment:{deployment_id}")
        if raw is None:
            return None
        return Deployment.from_dict(json.loads(raw))

    def recent(self, app: str, count: int = 10) -> list[Deployment]:
        ids = self.redis.lrange(f"{PREFIX}app:{app}:deployments", 0, count - 1)
        found = (self.get(_text(raw)) for raw in ids)
        return [d for d in found if d is not None]

    def append_log(self, deployment_id: str, *lines: str) -> None:
        if not lines:
            return
        key = f"{PREFIX}log:{deployment_id}"
        pipe = self.redis.pipeline()
        pipe.rpush(key, *(line[:LOG_MAX_LINE_CHARS] for line in lines))
        pipe.ltrim(key, -LOG_MAX_LINES, -1)
        pipe.execute()

    def read_log(self, deployment_id: str, start: int = 0) -> list[str]:
        return [_text(raw) for raw in self.redis.lrange(f"{PREFIX}log:{deployment_id}", start, -1)]

    def accept_delivery(self, delivery_id: str) -> bool:
        """Mark a delivery id as seen; False when it was accepted before (a redelivery)."""
        return bool(
            self.redis.set(f"{PREFIX}delivery:{delivery_id}", "1", nx=True, ex=DELIVERY_TTL_S)
        )

    def forget_delivery(self, delivery_id: str) -> None:
        """Undo `accept_delivery` when the work could not be recorded, so GitHub may retry."""
        self.redis.delete(f"{PREFIX}delivery:{delivery_id}")

    # --- intake: the same work for the same app is queued once ------------------------
    def claim_work(self, app: str, work: str) -> bool:
        """Claim a commit (or a release tag) of an app; False when it was claimed before.

        Kept as long as delivery ids, so a redelivery under a new id is caught too.
        """
        return bool(self.redis.set(_claim_key(app, work), "", nx=True, ex=DELIVERY_TTL_S))

    def note_claim(self, app: str, work: str, deployment_id: str) -> None:
        """Name what a claim produced, so a later duplicate can point at it."""
        self.redis.set(_claim_key(app, work), deployment_id, xx=True, keepttl=True)

    def claimed_by(self, app: str, work: str) -> str | None:
        raw = self.redis.get(_claim_key(app, work))
        return _text(raw) or None if raw is not None else None

    def release_claim(self, app: str, work: str) -> None:
        """Undo `claim_work` when the work could not be recorded."""
        self.redis.delete(_claim_key(app, work))


def _claim_key(app: str, work: str) -> str:
    return f"{PREFIX}claim:{app}:{work}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
