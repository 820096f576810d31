"""Outgoing webhooks when a deployment finishes (`platform.notify` in nephelios.yml).

Best effort by contract: each URL gets one POST with a short timeout; a failure is logged
with the URL's scheme and host only (chat webhook URLs carry their token in the path) and
never fails or delays the deployment beyond that timeout.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from pipeline.core.deployment import Deployment
from pipeline.core.notice import notice

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0


def deployment_finished(
    urls: Sequence[str],
    deployment: Deployment,
    domains: Sequence[str] = (),
    fields: Mapping[str, str] | None = None,
) -> int:
    """POST the notice to every URL; return how many accepted it (2xx)."""
    if not urls:
        return 0
    body = json.dumps(notice(deployment, domains)).encode()
    return sum(1 for url in urls if _post(url, body, dict(fields or {})))


def _post(url: str, body: bytes, extra: dict[str, str]) -> bool:
    # The scheme is checked to be http(s) when nephelios.yml is loaded.
    request = urllib.request.Request(  # noqa: S310
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "nephelios"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S):  # noqa: S310
            return True
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    log.warning("notify %s failed: %s", where(url), reason, extra=extra)
    return False


def where(url: str) -> str:
    """The part of a webhook URL that is safe to log."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
