"""Admin request bodies: validated into plain values, or refused with a one-line reason.

Pure: no Redis, Docker, git or HTTP here. Every refusal is an `AdminError` whose message
names the body key and, except for env values, the value at fault. The checks on an app are
nephelios.yml's own (`parse_app`), so an app made over HTTP obeys the same rules as one
written by hand; only the key names are the admin API's (`app_type`, `github_url`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.core.appmodel import MODEL_KEYS
from pipeline.core.config import (
    APP_NAME_RE,
    REPO_RE,
    RESERVED_PREFIX,
    App,
    Platform,
    is_reserved_name,
    parse_app,
)
from pipeline.core.deployment import SUCCEEDED, Deployment
from pipeline.core.github import SHA_RE, placeholder_repo
from pipeline.errors import AdminError, ConfigError

CREATE_KEYS = (
    *("app_name", "app_type", "github_url", "branch", "port", "domains", "replicas", "env"),
    # app model (issue 8): the same keys as nephelios.yml; secrets are names, set by the CLI
    *sorted(MODEL_KEYS),
)
# Body key -> nephelios.yml key, for the keys whose names differ.
YAML_KEYS = {"app_type": "type"}
GITHUB_HTTPS_RE = re.compile(
    r"^https://github\.com/(?P<repo>[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}?)(?:\.git)?/?\Z"
)
# One branch or tag name (no glob: its head is resolved), within git's ref-name rules.
REF_NAME_RE = re.compile(
    r"^(?![-/.])(?!.*\.\.)(?!.*//)(?!.*\.lock$)[A-Za-z0-9._/-]{1,200}(?<![/.])\Z"
)
APP_NAME_RULE = (
    "an app name is 1-50 lowercase letters, digits or '-', not starting or ending with '-' "
    "(it must be a DNS label, a Swarm stack name and a Traefik router name)"
)


@dataclass(frozen=True)
class CreateRequest:
    app: App
    # The mapping stored durably: nephelios.yml's keys, exactly what the caller gave.
    raw: dict[str, Any]


def expect_object(body: object, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise AdminError("the body must be a JSON object")
    unknown = sorted(str(key) for key in body if key not in allowed)
    if unknown:
        raise AdminError(f"unknown key {unknown[0]!r}; expected some of {', '.join(allowed)}")
    return body


def app_name(body: Mapping[str, Any]) -> str:
    name = body.get("app_name")
    if not isinstance(name, str):
        raise AdminError("app_name: required, a string")
    return check_app_name(name)


def check_app_name(name: str) -> str:
    if not APP_NAME_RE.match(name):
        raise AdminError(f"app_name: {APP_NAME_RULE} (got {name[:60]!r})")
    return name


def check_new_name(name: str) -> str:
    # The same rule as nephelios.yml's (parse_app), checked first for a clearer message.
    if is_reserved_name(name):
        raise AdminError(f"app_name: names starting with {RESERVED_PREFIX!r} are reserved")
    return name


def parse_create(body: object, platform: Platform, max_replicas: int) -> CreateRequest:
    """Validate a `POST /create` body into the App it describes and the mapping to store."""
    fields = expect_object(body, CREATE_KEYS)
    name = check_new_name(app_name(fields))
    raw: dict[str, Any] = {}
    for key in CREATE_KEYS[3:]:
        if key in fields and fields[key] is not None:
            raw[key] = fields[key]
    if "app_type" in fields:
        raw["type"] = fields["app_type"]
    raw.update(source_keys(fields.get("github_url"), name))
    branch = raw.get("branch", "main")
    if isinstance(branch, str) and not REF_NAME_RE.match(branch):
        raise AdminError(f"branch: expected one branch name, not a pattern (got {branch!r})")
    try:
        app = parse_app("body", name, raw, platform, None, max_replicas)
    except ConfigError as exc:
        raise AdminError(body_reason(exc, name)) from exc
    check_replicas(app.replicas, max_replicas)
    return CreateRequest(app=app, raw=raw)


def source_keys(github_url: object, name: str) -> dict[str, str]:
    """`repo` (and `git_url` for a local repository) for a `github_url` value."""
    if not isinstance(github_url, str) or not github_url.strip():
        raise AdminError("github_url: required, a string")
    url = github_url.strip()
    match = GITHUB_HTTPS_RE.match(url)
    if match:
        return {"repo": match["repo"]}
    if REPO_RE.match(url):
        return {"repo": url}
    if url.startswith("file:///") or url.startswith("/"):
        # A repository on this host (tests, local use): no GitHub repository pushes to it,
        # so it gets a placeholder `repo` that no webhook can match.
        return {"repo": placeholder_repo(name), "git_url": url}
    raise AdminError(
        "github_url: expected https://github.com/owner/name, owner/name, or an absolute path "
        f"or file:// URL of a local git repository (got {url[:100]!r})"
    )


def body_reason(exc: ConfigError, name: str) -> str:
    key = exc.key.removeprefix(f"apps.{name}").lstrip(".") or "app_name"
    head, _, rest = key.partition("[")
    head = {"type": "app_type", "repo": "github_url", "git_url": "github_url"}.get(head, head)
    key = f"{head}[{rest}" if rest else head
    if exc.value == "<hidden>" or key.startswith("env."):
        return f"{key}: {exc.reason}"
    return f"{key}: {exc.reason} (got {_short(exc.value)})"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_replicas(replicas: object, max_replicas: int) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise AdminError(f"replicas: expected an integer from 0 to {max_replicas}")
    if not 0 <= replicas <= max_replicas:
        raise AdminError(
            f"replicas: expected an integer from 0 to {max_replicas} (got {replicas}); "
            "the maximum is NEPHELIOS_MAX_REPLICAS"
        )
    return replicas


def parse_scale(body: object, max_replicas: int) -> tuple[str, int]:
    fields = expect_object(body, ("app_name", "replicas"))
    name = app_name(fields)
    if "replicas" not in fields:
        raise AdminError("replicas: required, an integer")
    return name, check_replicas(fields["replicas"], max_replicas)


def parse_remove(body: object) -> str:
    return app_name(expect_object(body, ("app_name", "volumes")))


def remove_volumes_asked(body: Mapping[str, Any]) -> bool:
    """`"volumes": true` in a `/remove` body also removes the app's named volumes."""
    asked = body.get("volumes", False)
    if not isinstance(asked, bool):
        raise AdminError(f"volumes: expected true or false (got {asked!r})")
    return asked


@dataclass(frozen=True)
class DeployRequest:
    ref: str | None = None
    commit: str | None = None


def parse_deploy(body: object) -> DeployRequest:
    """`{}` (the branch head), `{"ref": branch or tag}` or `{"commit": 40 hex}`."""
    fields = expect_object({} if body is None else body, ("ref", "commit"))
    ref, commit = fields.get("ref"), fields.get("commit")
    if ref is not None and commit is not None:
        raise AdminError("give either ref or commit, not both")
    if commit is not None:
        if not isinstance(commit, str) or not SHA_RE.match(commit.lower()):
            raise AdminError(f"commit: expected a full 40-character commit id (got {commit!r})")
        return DeployRequest(commit=commit.lower())
    if ref is not None:
        if not isinstance(ref, str) or not REF_NAME_RE.match(ref):
            raise AdminError(f"ref: expected a branch or tag name (got {ref!r})")
        return DeployRequest(ref=ref)
    return DeployRequest()


def redacted(app: App) -> dict[str, Any]:
    """An app's config for responses: env names only, because values may be secrets."""
    return {
        "app_name": app.name,
        "app_type": app.type,
        "repo": app.repo,
        "branch": app.branch,
        "port": app.port,
        "domains": list(app.domains),
        "replicas": app.replicas,
        "env": sorted(app.env),
    }


ROLLBACK_TRIGGER = "api:rollback"


def choose_rollback(
    newest_first: list[Deployment], live_image: str, local_tags: set[str]
) -> Deployment | None:
    """The succeeded deployment a rollback goes back to, or None.

    The live image's own build is the anchor; the target is the newest succeeded build older
    than it, with another image that is still on the engine. Rollback records never count as
    builds, so a second rollback goes further back instead of undoing the first.
    """
    builds = [
        d
        for d in newest_first
        if d.status == SUCCEEDED and d.image and d.trigger != ROLLBACK_TRIGGER
    ]
    anchor = next((i for i, d in enumerate(builds) if d.image == live_image), -1)
    for deployment in builds[anchor + 1 :]:
        if deployment.image != live_image and deployment.image in local_tags:
            return deployment
    return None
