"""What a deployment's state looks like as a GitHub commit status.

Pure: maps a deployment record to the body of `POST /repos/{owner}/{repo}/statuses/{sha}`
(https://docs.github.com/en/rest/commits/statuses#create-a-commit-status). GitHub knows
four states; a superseded or stale push is neither a success nor a failure of that commit,
so it is reported as `error` with a description that says what happened.
"""

from __future__ import annotations

from typing import Any

from pipeline.core import deployment as states
from pipeline.core.deployment import Deployment

CONTEXT_PREFIX = "nephelios"
# GitHub rejects descriptions longer than 140 characters.
MAX_DESCRIPTION = 140

_STATES = {
    states.QUEUED: ("pending", "queued"),
    states.BUILDING: ("pending", "building"),
    states.DEPLOYING: ("pending", "deploying"),
    states.SUCCEEDED: ("success", "live"),
    states.FAILED: ("failure", "failed"),
    states.SUPERSEDED: ("error", "superseded by a newer push"),
    states.STALE: ("error", "not deployed (stale)"),
}


def status_body(deployment: Deployment, public_url: str | None) -> dict[str, Any]:
    state, words = _STATES[deployment.status]
    description = f"{deployment.app}: {words}"
    if deployment.error:
        description += f": {deployment.error.splitlines()[0]}"
    body: dict[str, Any] = {
        "state": state,
        "context": f"{CONTEXT_PREFIX}/{deployment.app}",
        "description": _shorten(description),
    }
    if public_url:
        body["target_url"] = f"{public_url.rstrip('/')}/deployments/{deployment.id}"
    return body


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"
