"""The deployment record: one attempt to take one commit of one app live.

Pure data and transitions; `pipeline.store` keeps these in Redis. A record carries the
trigger (a delivery id or an API call) but never a secret: no tokens, no env values.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

QUEUED = "queued"
BUILDING = "building"
DEPLOYING = "deploying"
SUCCEEDED = "succeeded"
FAILED = "failed"
SUPERSEDED = "superseded"
STALE = "stale"
FINAL = frozenset({SUCCEEDED, FAILED, SUPERSEDED, STALE})


def new_deployment_id() -> str:
    return secrets.token_hex(8)


@dataclass
class Deployment:
    id: str
    app: str
    commit: str
    ref: str
    trigger: str
    status: str = QUEUED
    error: str = ""
    image: str = ""
    # The last lines of the build log when a build failed, so the reason is in the record.
    log_tail: str = ""
    created_at: float = field(default_factory=time.time)
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.history:
            self.history.append({"status": self.status, "at": self.created_at})

    @property
    def short_commit(self) -> str:
        return self.commit[:12]

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    def move(self, status: str, error: str = "", at: float | None = None) -> None:
        """Record a transition; the error, if any, is the one-line reason shown to users."""
        self.status = status
        if error:
            self.error = error
        entry: dict[str, Any] = {"status": status, "at": time.time() if at is None else at}
        if error:
            entry["error"] = error
        self.history.append(entry)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deployment:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def log_fields(app: str, deployment_id: str, trigger: str) -> dict[str, str]:
    """Structured log extras naming a deployment; `trigger` is `delivery:<id>` for a push,
    so the GitHub delivery id joins the receiver's and the worker's lines."""
    fields = {"app": app, "deployment": deployment_id}
    source, _, delivery = trigger.partition(":")
    if source == "delivery" and delivery:
        fields["delivery"] = delivery
    return fields
