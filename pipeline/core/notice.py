"""The message sent to chat webhooks when a deployment finishes. Pure; no I/O.

One JSON body serves both common targets: Slack incoming webhooks read `text`
(https://api.slack.com/messaging/webhooks) and Discord webhooks read `content`
(https://discord.com/developers/docs/resources/webhook#execute-webhook), and each ignores
the other's key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.core.deployment import SUCCEEDED, Deployment

# Discord refuses `content` over 2000 characters; keep well inside it.
MAX_CHARS = 1800


def notice(deployment: Deployment, domains: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON body announcing `deployment`'s final status."""
    head = f"{deployment.app}: {deployment.short_commit} {deployment.status}"
    if deployment.status == SUCCEEDED and domains:
        head += " - live at " + ", ".join(f"https://{domain}/" for domain in domains)
    elif deployment.error:
        head += f": {deployment.error}"
    text = f"{head} (deployment {deployment.id}, {deployment.ref})"
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 3] + "..."
    return {"text": text, "content": text}
