"""Commit statuses on GitHub, when a token is configured.

One POST per state change the user cares about (pending when queued or started, then success,
failure or error). Reporting never fails a deployment: an unreachable or refusing API is
logged (with the HTTP status, never the token) and the deployment goes on. The token is sent
only in the Authorization header, to the configured API base (GitHub Enterprise has its own).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from pipeline.core.commit_status import status_body
from pipeline.core.deployment import Deployment
from pipeline.settings import Settings

log = logging.getLogger(__name__)

TIMEOUT_S = 10


@dataclass(frozen=True)
class Reporter:
    api_url: str
    public_url: str | None
    token: str = field(default="", repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Reporter:
        return cls(settings.github_api_url, settings.public_url, settings.github_token)

    def report(self, deployment: Deployment, repository: str) -> None:
        """Post the deployment's current state as a status of its commit; never raises."""
        # A release's deployment has no commit until its tag is resolved: nothing to mark yet.
        if not self.token or not deployment.commit:
            return
        url = f"{self.api_url.rstrip('/')}/repos/{repository}/statuses/{deployment.commit}"
        body = json.dumps(status_body(deployment, self.public_url)).encode()
        request = urllib.request.Request(  # noqa: S310 - the configured GitHub API base
            url,
            data=body,
            method="POST",
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "User-Agent": "nephelios",
                "X-GitHub-Api-Version": "2022-11-28",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S):  # noqa: S310
                pass
        except urllib.error.HTTPError as exc:
            log.warning(
                "%s %s: commit status refused: HTTP %d", deployment.app, deployment.id, exc.code
            )
        except (urllib.error.URLError, OSError) as exc:
            log.warning("%s %s: commit status not sent: %s", deployment.app, deployment.id, exc)
