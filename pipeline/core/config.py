"""nephelios.yml: which GitHub repositories deploy as which apps, and how.

`load_config(path)` reads and validates the whole file once, at start-up, and returns frozen
dataclasses; every problem raises `ConfigError` naming the file, the dotted key and the bad
value. Nothing else in Nephelios reads YAML or guesses defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pipeline.core.appmodel import (
    DEFAULT_MAX_REPLICAS,
    MODEL_KEYS,
    SHOWN_KEY_RE,
    TLS,
    BuildOptions,
    Health,
    Process,
    Resources,
    SecretUse,
    parse_app_model,
    parse_tls,
    replicas,
    unknown_key,
)
from pipeline.errors import ConfigError, ConfigSyntaxError

APP_TYPES = ("static", "python", "nodejs")
DEFAULT_PORTS = {"static": 80, "python": 8000, "nodejs": 3000}
DEFAULT_BASE_IMAGES = {
    "static": "nephelios/busybox:local",
    "python": "python:3.12-slim",
    "nodejs": "node:20-slim",
}

# An app name becomes a DNS label, a Swarm stack name (so `<name>_web` must stay a valid
# service name) and a Traefik router name; the intersection is a short lowercase label.
APP_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?\Z")
REPO_RE = re.compile(r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}\Z")
DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z"
)
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# Branch globs: git's own ref rules forbid these characters, so refusing them early keeps
# nonsense out of refspecs.
BRANCH_RE = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/*?\[\]-]{1,200}\Z")
# Image references and registries, after Docker's reference grammar (distribution/reference):
# they reach a generated Dockerfile's FROM line and the edge stack file, so a space, a newline
# or a leading '-' must never get through.
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
_PORT = r"(?::[0-9]{1,5})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REGISTRY_RE = re.compile(rf"{_HOST}{_PORT}(?:/{_COMPONENT})*")
IMAGE_RE = re.compile(
    rf"(?:{_HOST}{_PORT}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)
# Nephelios' own stacks (the edge router is stack `nephelios`) must never be an app's:
# deploying an app runs `docker stack deploy --prune` on the stack of its name.
RESERVED_PREFIX = "nephelios"


def is_reserved_name(name: str) -> bool:
    return name == RESERVED_PREFIX or name.startswith(f"{RESERVED_PREFIX}-")


@dataclass(frozen=True)
class Platform:
    domain: str = "localhost"
    edge_network: str = "nephelios-edge"
    http_port: int = 80
    https_port: int = 443
    registry: str | None = None
    keep_images: int = 3
    git_base_url: str = "https://github.com/"
    traefik_image: str = "nephelios/traefik:local"
    base_images: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_BASE_IMAGES))
    notify: tuple[str, ...] = ()
    # --- app model (issue 8): Let's Encrypt for every app; None keeps apps on plain HTTP
    tls: TLS | None = None


@dataclass(frozen=True)
class App:
    name: str
    repo: str
    branch: str = "main"
    type: str = "static"
    port: int = 80
    domains: tuple[str, ...] = ()
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    git_url: str | None = None
    build_timeout_s: int = 1800
    # Which GitHub events deploy the app beyond pushes to `branch` (see parse_intake_keys).
    tags: tuple[str, ...] = ()
    releases: bool = False
    paths: tuple[str, ...] = ()
    # --- app model (issue 8), validated by pipeline.core.appmodel ---
    path_prefixes: tuple[str, ...] = ()
    strip_prefix: bool = False
    tls: bool | None = None  # None: on when the platform has tls
    health: Health | None = None
    resources: Resources = field(default_factory=Resources)
    placement: tuple[str, ...] = ()
    volumes: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, SecretUse] = field(default_factory=dict)
    processes: Mapping[str, Process] = field(default_factory=dict)
    build: BuildOptions = field(default_factory=BuildOptions)
    install_command: str | None = None
    build_command: str | None = None
    run_command: str | None = None
    app_workdir: str | None = None

    def uses_tls(self, platform: Platform) -> bool:
        return platform.tls is not None and self.tls is not False

    def clone_url(self, platform: Platform) -> str:
        if self.git_url:
            return self.git_url
        return f"{platform.git_base_url.rstrip('/')}/{self.repo}.git"


@dataclass(frozen=True)
class Config:
    platform: Platform
    apps: Mapping[str, App]
    source: str = "<memory>"


PLATFORM_KEYS = {
    "domain",
    "edge_network",
    "http_port",
    "https_port",
    "registry",
    "keep_images",
    "git_base_url",
    "traefik_image",
    "base_images",
    "notify",
    "tls",  # app model (issue 8)
}
APP_KEYS = {
    "repo",
    "branch",
    "type",
    "port",
    "domains",
    "replicas",
    "env",
    "git_url",
    "build_timeout_s",
    # intake: which events deploy the app (parse_intake_keys)
    "tags",
    "releases",
    "paths",
} | MODEL_KEYS  # app model (issue 8): routing, TLS, health, resources, processes, build...


def load_config(path: str | Path, max_replicas: int = DEFAULT_MAX_REPLICAS) -> Config:
    """Read and validate nephelios.yml; raise ConfigError naming the file, key and value."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, "<file>", source, f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigSyntaxError(source, f"byte {exc.start}", "not UTF-8 text") from exc
    data = read_yaml(source, text)
    return parse_config(data, source, Path(path).resolve().parent, max_replicas)


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error: by default
    the last one silently wins, and a user who wrote `replicas` twice meant one of them."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` is meant to be overridden by the keys beside it
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # unhashable: the base class refuses it with its own message
            if key in seen:
                shown = str(key) if SHOWN_KEY_RE.fullmatch(str(key)) else "a key"
                raise yaml.constructor.ConstructorError(
                    None, None, f"{shown} is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(source: str, text: str) -> object:
    """The document in `text`; a syntax error becomes one line naming the place, and never
    quotes the file (it may not be nephelios.yml at all)."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "<file>"
        problem = (exc.problem or exc.context or "not valid YAML").strip()
        raise ConfigSyntaxError(source, where, f"not valid YAML: {problem[:120]}") from exc
    except yaml.YAMLError as exc:
        # The reader's errors (control characters, bad encodings) carry a position, no mark.
        position = getattr(exc, "position", None)
        where = "<file>" if position is None else f"character {position + 1}"
        reason = str(getattr(exc, "reason", "") or "not valid YAML")
        raise ConfigSyntaxError(source, where, f"not valid YAML: {reason[:120]}") from exc


def parse_config(
    data: object,
    source: str = "<memory>",
    base_dir: Path | None = None,
    max_replicas: int = DEFAULT_MAX_REPLICAS,
) -> Config:
    if data is None:
        data = {}
    _check_mapping(source, "<top>", data, {"platform", "apps"})
    assert isinstance(data, dict)
    platform = _parse_platform(source, data.get("platform") or {})
    raw_apps = data.get("apps") or {}
    _check_mapping(source, "apps", raw_apps, None)
    apps: dict[str, App] = {}
    for name, raw in raw_apps.items():
        app = parse_app(source, str(name), raw or {}, platform, base_dir, max_replicas)
        check_routes(source, apps, app)
        apps[str(name)] = app
    return Config(platform=platform, apps=apps, source=source)


def route_owner(apps: Mapping[str, App], app: App) -> tuple[str, str] | None:
    """(domain, other app) when another app already answers one of `app`'s routes.

    A route is a domain and a path prefix: two apps may share a domain under different
    prefixes (Traefik prefers the longer rule), never the same one, or which app answers
    would depend on Traefik's tie-break."""
    mine = {(d, p) for d in app.domains for p in app.path_prefixes or ("",)}
    for other in apps.values():
        if other.name == app.name:
            continue
        for domain, prefix in sorted(mine):
            if domain in other.domains and prefix in (other.path_prefixes or ("",)):
                return domain + prefix, other.name
    return None


def check_routes(source: str, apps: Mapping[str, App], app: App) -> None:
    clash = route_owner(apps, app)
    if clash is not None:
        route, other = clash
        raise ConfigError(
            source, f"apps.{app.name}.domains", route, f"already routed to app {other!r}"
        )


def parse_app(
    source: str,
    name: str,
    raw: object,
    platform: Platform,
    base_dir: Path | None = None,
    max_replicas: int = DEFAULT_MAX_REPLICAS,
) -> App:
    """Validate one app's mapping (from nephelios.yml or an admin call)."""
    key = f"apps.{name}"
    if not APP_NAME_RE.match(name):
        raise ConfigError(
            source,
            key,
            name,
            "app names are 1-50 lowercase letters, digits or '-', not starting or ending with '-'",
        )
    if is_reserved_name(name):
        raise ConfigError(
            source, key, name, f"names starting with {RESERVED_PREFIX!r} are reserved"
        )
    _check_mapping(source, key, raw, APP_KEYS)
    assert isinstance(raw, dict)
    repo = _string(source, f"{key}.repo", raw.get("repo"), required=True)
    if not REPO_RE.match(repo):
        raise ConfigError(source, f"{key}.repo", repo, "expected a GitHub 'owner/name'")
    branch = _string(source, f"{key}.branch", raw.get("branch", "main"))
    if not BRANCH_RE.match(branch):
        raise ConfigError(source, f"{key}.branch", branch, "not a usable branch name or glob")
    app_type = _string(source, f"{key}.type", raw.get("type", "static"))
    if app_type not in APP_TYPES:
        raise ConfigError(
            source, f"{key}.type", app_type, f"expected one of {', '.join(APP_TYPES)}"
        )
    return App(
        name=name,
        repo=repo,
        branch=branch,
        type=app_type,
        port=_int(source, f"{key}.port", raw.get("port", DEFAULT_PORTS[app_type]), 1, 65535),
        domains=_domains(source, f"{key}.domains", raw.get("domains"), name, platform),
        replicas=replicas(source, f"{key}.replicas", raw.get("replicas", 1), max_replicas),
        env=_env(source, f"{key}.env", raw.get("env") or {}),
        git_url=_git_url(source, f"{key}.git_url", raw.get("git_url"), base_dir),
        build_timeout_s=_int(
            source, f"{key}.build_timeout_s", raw.get("build_timeout_s", 1800), 10, 24 * 3600
        ),
        **parse_intake_keys(source, key, raw),
        **parse_app_model(source, key, raw, max_replicas),  # app model (issue 8)
    )


# --- intake keys: which GitHub events deploy an app -------------------------------------
# Tag names follow git's ref rules like branches; paths are repository-relative globs.
TAG_RE = BRANCH_RE
PATH_GLOB_RE = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.(?:/|$))[^\x00-\x1f]{1,300}\Z")


def parse_intake_keys(source: str, key: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """`tags` (tag globs), `releases` (bool) and `paths` (file globs) of one app."""
    releases = raw.get("releases", False)
    if not isinstance(releases, bool):
        raise ConfigError(source, f"{key}.releases", releases, "expected true or false")
    return {
        "tags": _globs(source, f"{key}.tags", raw.get("tags"), TAG_RE, "a tag name or glob"),
        "releases": releases,
        "paths": _globs(
            source, f"{key}.paths", raw.get("paths"), PATH_GLOB_RE, "a relative path or glob"
        ),
    }


def _globs(
    source: str, key: str, value: object, pattern: re.Pattern[str], what: str
) -> tuple[str, ...]:
    if value is None:
        return ()
    items: list[Any] = [value] if isinstance(value, str) else value  # type: ignore[assignment]
    if not isinstance(items, list) or not items:
        raise ConfigError(source, key, value, f"expected {what} or a non-empty list of them")
    globs = []
    for index, item in enumerate(items):
        glob = _string(source, f"{key}[{index}]", item)
        if not pattern.match(glob):
            raise ConfigError(source, f"{key}[{index}]", item, f"not {what}")
        globs.append(glob)
    return tuple(dict.fromkeys(globs))


# --- end of intake keys -----------------------------------------------------------------


def _parse_platform(source: str, raw: object) -> Platform:
    _check_mapping(source, "platform", raw, PLATFORM_KEYS)
    assert isinstance(raw, dict)
    defaults = Platform()
    domain = _string(source, "platform.domain", raw.get("domain", defaults.domain)).lower()
    if not DOMAIN_RE.match(domain):
        raise ConfigError(source, "platform.domain", domain, "not a valid domain name")
    network = _string(
        source, "platform.edge_network", raw.get("edge_network", defaults.edge_network)
    )
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z", network):
        raise ConfigError(source, "platform.edge_network", network, "not a valid network name")
    base_images = dict(DEFAULT_BASE_IMAGES)
    raw_images = raw.get("base_images") or {}
    _check_mapping(source, "platform.base_images", raw_images, set(APP_TYPES))
    for app_type, image in raw_images.items():
        base_images[app_type] = _image(source, f"platform.base_images.{app_type}", image)
    registry = raw.get("registry")
    if registry is not None:
        registry = _string(source, "platform.registry", registry)
        if not REGISTRY_RE.fullmatch(registry.rstrip("/")):
            raise ConfigError(
                source, "platform.registry", registry, "expected a registry HOST[:PORT][/PATH]"
            )
    return Platform(
        domain=domain,
        edge_network=network,
        http_port=_int(source, "platform.http_port", raw.get("http_port", 80), 1, 65535),
        https_port=_int(source, "platform.https_port", raw.get("https_port", 443), 1, 65535),
        registry=registry,
        keep_images=_int(source, "platform.keep_images", raw.get("keep_images", 3), 1, 100),
        git_base_url=_string(
            source, "platform.git_base_url", raw.get("git_base_url", defaults.git_base_url)
        ),
        traefik_image=_image(
            source, "platform.traefik_image", raw.get("traefik_image", defaults.traefik_image)
        ),
        base_images=base_images,
        notify=_notify_urls(source, "platform.notify", raw.get("notify") or []),
        tls=parse_tls(source, "platform.tls", raw.get("tls")),  # app model (issue 8)
    )


def _image(source: str, key: str, value: object) -> str:
    image = _string(source, key, value)
    if not IMAGE_RE.fullmatch(image):
        raise ConfigError(source, key, value, "expected an image reference such as name:tag")
    return image


def _notify_urls(source: str, key: str, value: object) -> tuple[str, ...]:
    """Outgoing webhook URLs. Chat webhook URLs hold their token in the path, so errors show
    only the scheme and host."""
    items: list[Any] = [value] if isinstance(value, str) else value  # type: ignore[assignment]
    if not isinstance(items, list):
        raise ConfigError(source, key, value, "expected a URL or a list of URLs")
    urls = []
    for index, item in enumerate(items):
        url = _string(source, f"{key}[{index}]", item)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shown = f"{parts.scheme}://{parts.hostname or ''}/..."
            raise ConfigError(source, f"{key}[{index}]", shown, "expected an http(s) URL")
        urls.append(url)
    return tuple(urls)


def _check_mapping(source: str, key: str, value: object, allowed: set[str] | None) -> None:
    if not isinstance(value, dict):
        # The whole file's value would be the file itself: name its type only.
        shown = type(value).__name__ if key == "<top>" else value
        raise ConfigError(source, key, shown, "expected a mapping")
    if allowed is None:
        return
    for name in value:
        if name not in allowed:
            raise unknown_key(source, key, name, allowed)


def _string(source: str, key: str, value: object, required: bool = False) -> str:
    if value is None and required:
        raise ConfigError(source, key, value, "is required")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, key, value, "expected a non-empty string")
    return value.strip()


def _int(source: str, key: str, value: object, low: int, high: int) -> int:
    # bool is an int in Python; `replicas: yes` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(source, key, value, f"expected an integer from {low} to {high}")
    if not low <= value <= high:
        raise ConfigError(source, key, value, f"expected an integer from {low} to {high}")
    return value


def _domains(
    source: str, key: str, value: object, name: str, platform: Platform
) -> tuple[str, ...]:
    if value is None:
        return (f"{name}.{platform.domain}",)
    items: list[Any] = [value] if isinstance(value, str) else value  # type: ignore[assignment]
    if not isinstance(items, list) or not items:
        raise ConfigError(source, key, value, "expected a domain or a non-empty list of domains")
    domains = []
    for index, item in enumerate(items):
        domain = _string(source, f"{key}[{index}]", item).lower()
        if not DOMAIN_RE.match(domain):
            raise ConfigError(source, f"{key}[{index}]", item, "not a valid domain name")
        domains.append(domain)
    return tuple(dict.fromkeys(domains))


def _env(source: str, key: str, value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(source, key, value, "expected a mapping of NAME: value")
    env = {}
    for name, item in value.items():
        # fullmatch: `$` would let a trailing newline through into the container's env.
        if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
            raise ConfigError(source, f"{key}.{name}", name, "not a valid variable name")
        if isinstance(item, dict | list) or item is None:
            raise ConfigError(source, f"{key}.{name}", "<hidden>", "expected a string or number")
        # The kernel ends an environment string at NUL, so Docker refuses it at deploy time;
        # refuse it here without echoing the value, which may be a secret.
        if "\x00" in str(item):
            raise ConfigError(source, f"{key}.{name}", "<hidden>", "contains a NUL character")
        # YAML turns `yes` into True; the container should see what the user most likely
        # meant, so booleans become lowercase words rather than "True".
        env[name] = str(item).lower() if isinstance(item, bool) else str(item)
    return env


def _git_url(source: str, key: str, value: object, base_dir: Path | None) -> str | None:
    if value is None:
        return None
    url = _string(source, key, value)
    if url.startswith("-"):
        raise ConfigError(source, key, url, "a git URL cannot start with '-'")
    if "://" not in url and not url.startswith("/") and base_dir is not None:
        # A relative path means a local repository next to nephelios.yml.
        return str((base_dir / url).resolve())
    return url
