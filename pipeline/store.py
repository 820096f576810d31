"""Deployment records and webhook delivery ids in Redis.

Keys (all under `nephelios:`): `deployment:<id>` holds the record as JSON, `log:<id>` the
build and rollout log as a capped list of lines, `app:<name>:deployments` the newest ids
of an app, `delivery:<id>` marks a delivery id as accepted for a week, and
`claim:<app>:<commit>` (or `claim:<app>:refs/tags/<tag>` for a release) marks work queued for
that app as long.

Per-app ordering (see `pipeline.queueing`): `app:<name>:waiting` lists the deployments that
no worker has taken yet, `app:<name>:lock` names the holder of the app's lock (it expires
unless its holder keeps renewing it, so a killed worker cannot keep it), and `running` maps
each taken deployment id to "<app> <lock token>" until its worker lets go of it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator

import redis

from pipeline.core.deployment import FAILED, Deployment

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

    def create(self, deployment: Deployment, pipe: redis.client.Pipeline | None = None) -> None:
        """Save a new record and forget the app's records beyond the newest few.

        With `pipe`, the write joins the caller's pipeline (one round trip for a whole enqueue).
        """
        keys = [f"{PREFIX}deployment:{deployment.id}", f"{PREFIX}app:{deployment.app}:deployments"]
        record = json.dumps(deployment.to_dict())
        target = self.redis if pipe is None else pipe
        target.eval(_CREATE, len(keys), *keys, deployment.id, record, KEEP_DEPLOYMENTS, PREFIX)

    def get(self, deployment_id: str) -> Deployment | None:
        raw = self.redis.get(f"{PREFIX}deployment:{deployment_id}")
        if raw is None:
            return None
        return Deployment.from_dict(json.loads(raw))

    def fail_unfinished(self, deployment_ids: Iterable[str], reason: str) -> list[str]:
        """Fail each of these deployments that has not finished yet; the ids it failed."""
        failed = []
        for deployment_id in deployment_ids:
            found = self.get(deployment_id)
            if found is not None and not found.finished:
                found.move(FAILED, reason)
                self.save(found)
                failed.append(deployment_id)
        return failed

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
    def claim_work(self, app: str, work: str, holder: str = "") -> bool:
        """Claim a commit (or a release tag) of an app; False when it was claimed before.

        `holder` (the deployment id about to be made) lets a later duplicate point at it.
        Kept as long as delivery ids, so a redelivery under a new id is caught too.
        """
        return bool(self.redis.set(_claim_key(app, work), holder, nx=True, ex=DELIVERY_TTL_S))

    def claimed_by(self, app: str, work: str) -> str | None:
        raw = self.redis.get(_claim_key(app, work))
        return _text(raw) or None if raw is not None else None

    def release_claim(self, app: str, work: str) -> None:
        """Undo `claim_work` when the work could not be recorded."""
        self.redis.delete(_claim_key(app, work))


def _claim_key(app: str, work: str) -> str:
    return f"{PREFIX}claim:{app}:{work}"


# Record, list and trim in one step, so the intake's enqueue is a single round trip.
_CREATE = """
redis.call('set', KEYS[1], ARGV[2])
redis.call('lpush', KEYS[2], ARGV[1])
local old = redis.call('lrange', KEYS[2], tonumber(ARGV[3]), -1)
redis.call('ltrim', KEYS[2], 0, tonumber(ARGV[3]) - 1)
for _, id in ipairs(old) do
  redis.call('del', ARGV[4] .. 'deployment:' .. id, ARGV[4] .. 'log:' .. id)
end
return #old
"""
# Take the app's lock and every waiting deployment with it, atomically, so that a
# deployment is taken by at most one worker and never while another holds the app.
_CLAIM = """
if redis.call('llen', KEYS[2]) == 0 then return false end
if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local ids = redis.call('lrange', KEYS[2], 0, -1)
redis.call('del', KEYS[2])
for _, id in ipairs(ids) do redis.call('hset', KEYS[3], id, ARGV[3] .. ' ' .. ARGV[1]) end
return ids
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
return redis.call('llen', KEYS[2])
"""


class AppQueue:
    """One app's waiting list and lock in Redis; see the module docstring for the keys."""

    def __init__(self, connection: redis.Redis, app: str) -> None:
        self.redis = connection
        self.app = app
        self.lock_key = f"{PREFIX}app:{app}:lock"
        self.waiting_key = f"{PREFIX}app:{app}:waiting"

    def add(self, deployment_id: str, pipe: redis.client.Pipeline | None = None) -> None:
        (self.redis if pipe is None else pipe).rpush(self.waiting_key, deployment_id)

    def waiting(self) -> list[str]:
        return [_text(raw) for raw in self.redis.lrange(self.waiting_key, 0, -1)]

    def claim(self, token: str, ttl_s: float) -> list[str]:
        """Take the lock and all waiting ids; [] when the app is busy or nothing waits."""
        keys = [self.lock_key, self.waiting_key, RUNNING_KEY]
        ids = self.redis.eval(_CLAIM, len(keys), *keys, token, int(ttl_s * 1000), self.app)
        return [_text(raw) for raw in ids or []]

    def lock(self, token: str, ttl_s: float) -> bool:
        """Take the lock alone, leaving the waiting list (the admin API's remove uses it)."""
        return bool(self.redis.set(self.lock_key, token, nx=True, px=int(ttl_s * 1000)))

    def drain(self) -> list[str]:
        """Take every waiting id off the list (under the lock), oldest first."""
        pipe = self.redis.pipeline()
        pipe.lrange(self.waiting_key, 0, -1)
        pipe.delete(self.waiting_key)
        ids, _ = pipe.execute()
        return [_text(raw) for raw in ids]

    def renew(self, token: str, ttl_s: float) -> bool:
        """Extend the lock; False when it expired or someone else holds it now."""
        return bool(self.redis.eval(_RENEW, 1, self.lock_key, token, int(ttl_s * 1000)))

    def release(self, token: str) -> int:
        """Let go of the lock if still ours; return how many deployments wait meanwhile."""
        keys = [self.lock_key, self.waiting_key]
        return int(self.redis.eval(_RELEASE, len(keys), *keys, token))

    def holder(self) -> str | None:
        raw = self.redis.get(self.lock_key)
        return None if raw is None else _text(raw)

    def first_kick(self, every_s: int) -> bool:
        """True at most once per `every_s` seconds: rate-limits the reaper's kicks."""
        key = f"{PREFIX}app:{self.app}:kicked"
        return bool(self.redis.set(key, "1", nx=True, ex=every_s))


RUNNING_KEY = f"{PREFIX}running"


def running(connection: redis.Redis) -> dict[str, tuple[str, str]]:
    """Taken deployment ids -> (app, lock token) of the worker that took them."""
    entries: dict[str, tuple[str, str]] = {}
    for raw_id, raw_value in connection.hgetall(RUNNING_KEY).items():
        app, _, token = _text(raw_value).partition(" ")
        entries[_text(raw_id)] = (app, token)
    return entries


def forget_running(connection: redis.Redis, *deployment_ids: str) -> None:
    if deployment_ids:
        connection.hdel(RUNNING_KEY, *deployment_ids)


def apps_with_waiting(connection: redis.Redis) -> Iterator[str]:
    for raw in connection.scan_iter(match=f"{PREFIX}app:*:waiting", count=500):
        yield _text(raw).removeprefix(f"{PREFIX}app:").removesuffix(":waiting")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
