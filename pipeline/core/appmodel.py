"""The per-app keys of nephelios.yml beyond the basics: routing by path, TLS, health, resources,
placement, volumes, secrets, processes and build options.

Pure: `parse_app_model(source, key, raw)` validates those keys of one app's mapping and returns
them as keyword arguments for `App`; every problem raises `ConfigError` naming the file, the
dotted key and the bad value. Rendering them is `pipeline.core.render`'s job.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError

# Path prefixes go into a Traefik rule between backticks and into a shell-free healthcheck
# URL, so they are held to plain URL path characters.
PATH_RE = re.compile(r"^/[A-Za-z0-9._~%/-]*\Z")
MEMORY_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)?[bkmgBKMG]?\Z")
# node.role == manager, node.labels.disk != hdd, engine.labels.x == y
CONSTRAINT_RE = re.compile(r"^[A-Za-z0-9_.-]+ *(?:==|!=) *[A-Za-z0-9_.:/-]+\Z")
PROCESS_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?\Z")
# A mount target: absolute, printable, no ':' (the compose short syntax's separator).
VOLUME_TARGET_RE = re.compile(r"/[^\x00-\x1f\x7f:]*")
SYSTEM_DIRS = ("/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/lib", "/usr")
VOLUME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,30}[a-z0-9])?\Z")
SECRET_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
# A build context or Dockerfile path inside the repository: relative, no '..'.
REPO_PATH_RE = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9._/-]+\Z")
STAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
BUILD_ARG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")

MODEL_KEYS = {
    "path_prefixes",
    "strip_prefix",
    "tls",
    "health",
    "resources",
    "placement",
    "volumes",
    "secrets",
    "processes",
    "build",
    "install_command",
    "build_command",
    "run_command",
    "app_workdir",
}
HEALTH_KEYS = {"path", "command", "interval_s", "timeout_s", "retries", "start_period_s"}
RESOURCE_KEYS = {"cpus", "memory", "reserve_cpus", "reserve_memory"}
PROCESS_KEYS = {"command", "replicas", "health"}
SECRET_KEYS = {"env"}
BUILD_KEYS = {"context", "dockerfile", "target", "args"}
# The cap on replicas when NEPHELIOS_MAX_REPLICAS is not set; the same cap applies to
# nephelios.yml, to /create and to /scale, so all three say the same thing.
DEFAULT_MAX_REPLICAS = 10


@dataclass(frozen=True)
class Health:
    """A health check: an HTTP path answered on the app's port, or a command."""

    path: str | None = None
    command: tuple[str, ...] = ()
    interval_s: int = 5
    timeout_s: int = 3
    retries: int = 3
    start_period_s: int = 10


@dataclass(frozen=True)
class Resources:
    cpus: float | None = None
    memory: str | None = None
    reserve_cpus: float | None = None
    reserve_memory: str | None = None

    @property
    def limits(self) -> dict[str, str]:
        return _resource_dict(self.cpus, self.memory)

    @property
    def reservations(self) -> dict[str, str]:
        return _resource_dict(self.reserve_cpus, self.reserve_memory)


def _resource_dict(cpus: float | None, memory: str | None) -> dict[str, str]:
    out = {}
    if cpus is not None:
        out["cpus"] = f"{cpus:g}"
    if memory is not None:
        out["memory"] = memory
    return out


@dataclass(frozen=True)
class Process:
    """A non-web process sharing the app's image (a Procfile line): never routed."""

    command: tuple[str, ...]
    replicas: int = 1
    # A command only: a process serves no routed port that a path could be asked on.
    health: Health | None = None


@dataclass(frozen=True)
class SecretUse:
    """A Docker secret given to the app as /run/secrets/NAME, and as $NAME when `env`."""

    env: bool = False


@dataclass(frozen=True)
class BuildOptions:
    context: str = "."
    dockerfile: str = "Dockerfile"
    target: str | None = None
    args: Mapping[str, str] = field(default_factory=dict)


def parse_app_model(
    source: str, key: str, raw: Mapping[str, Any], max_replicas: int = DEFAULT_MAX_REPLICAS
) -> dict[str, Any]:
    """Validate the app-model keys of one app; return them as keyword arguments for App."""
    strip = raw.get("strip_prefix", False)
    _bool(source, f"{key}.strip_prefix", strip)
    tls = raw.get("tls")
    if tls is not None:
        _bool(source, f"{key}.tls", tls)
    prefixes = _path_prefixes(source, f"{key}.path_prefixes", raw.get("path_prefixes"))
    if strip and not prefixes:
        raise ConfigError(source, f"{key}.strip_prefix", strip, "needs path_prefixes")
    return {
        "path_prefixes": prefixes,
        "strip_prefix": strip,
        "tls": tls,
        "health": _health(source, f"{key}.health", raw.get("health")),
        "resources": _resources(source, f"{key}.resources", raw.get("resources") or {}),
        "placement": _placement(source, f"{key}.placement", raw.get("placement") or []),
        "volumes": _volumes(source, f"{key}.volumes", raw.get("volumes") or {}),
        "secrets": _secrets(source, f"{key}.secrets", raw.get("secrets") or {}),
        "processes": _processes(
            source, f"{key}.processes", raw.get("processes") or {}, max_replicas
        ),
        "build": _build(source, f"{key}.build", raw.get("build") or {}),
        "install_command": _shell_line(
            source, f"{key}.install_command", raw.get("install_command")
        ),
        "build_command": _shell_line(source, f"{key}.build_command", raw.get("build_command")),
        "run_command": _shell_line(source, f"{key}.run_command", raw.get("run_command")),
        "app_workdir": _workdir(source, f"{key}.app_workdir", raw.get("app_workdir")),
    }


def _path_prefixes(source: str, key: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ConfigError(source, key, value, "expected a path or a non-empty list of paths")
    for index, item in enumerate(items):
        if not isinstance(item, str) or not PATH_RE.match(item) or not item.strip("/"):
            raise ConfigError(
                source, f"{key}[{index}]", item, "expected a URL path such as /api (not '/')"
            )
    return tuple(dict.fromkeys(p.rstrip("/") for p in items))


def _health(source: str, key: str, value: object) -> Health | None:
    if value is None:
        return None
    _mapping(source, key, value, HEALTH_KEYS)
    assert isinstance(value, dict)
    path, command = value.get("path"), value.get("command")
    if (path is None) == (command is None):
        raise ConfigError(source, key, sorted(value), "give exactly one of 'path' or 'command'")
    if path is not None and (not isinstance(path, str) or not PATH_RE.match(path)):
        raise ConfigError(source, f"{key}.path", path, "expected a URL path such as /health")
    return Health(
        path=path,
        command=_command(source, f"{key}.command", command) if command is not None else (),
        interval_s=_int(source, f"{key}.interval_s", value.get("interval_s", 5), 1, 3600),
        timeout_s=_int(source, f"{key}.timeout_s", value.get("timeout_s", 3), 1, 3600),
        retries=_int(source, f"{key}.retries", value.get("retries", 3), 1, 100),
        start_period_s=_int(
            source, f"{key}.start_period_s", value.get("start_period_s", 10), 0, 3600
        ),
    )


def _resources(source: str, key: str, value: object) -> Resources:
    _mapping(source, key, value, RESOURCE_KEYS)
    assert isinstance(value, dict)
    return Resources(
        cpus=_cpus(source, f"{key}.cpus", value.get("cpus")),
        memory=_memory(source, f"{key}.memory", value.get("memory")),
        reserve_cpus=_cpus(source, f"{key}.reserve_cpus", value.get("reserve_cpus")),
        reserve_memory=_memory(source, f"{key}.reserve_memory", value.get("reserve_memory")),
    )


def _cpus(source: str, key: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.01 <= value <= 512:
        raise ConfigError(source, key, value, "expected a number of CPUs from 0.01 to 512")
    return float(value)


def _memory(source: str, key: str, value: object) -> str | None:
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not MEMORY_RE.match(text):
        raise ConfigError(source, key, value, "expected a size such as 256M or 1G")
    # Swarm refuses tiny memory limits (under 6 MB) at deploy time; say so now.
    if _bytes(text) < 6 * 1024 * 1024:
        raise ConfigError(source, key, value, "expected at least 6M")
    return text.upper()


def _bytes(text: str) -> float:
    units = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
    suffix = text[-1].upper()
    if suffix in units:
        return float(text[:-1]) * units[suffix]
    return float(text)


def _placement(source: str, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(source, key, value, "expected a list of constraints")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not CONSTRAINT_RE.match(item.strip()):
            raise ConfigError(
                source, f"{key}[{index}]", item, "expected a constraint such as node.role == worker"
            )
    return tuple(item.strip() for item in value)


def _volumes(source: str, key: str, value: object) -> dict[str, str]:
    _mapping(source, key, value, None)
    assert isinstance(value, dict)
    volumes = {}
    for name, target in value.items():
        if not isinstance(name, str) or not VOLUME_RE.match(name):
            raise ConfigError(
                source, f"{key}.{name}", name, "volume names are lowercase letters, digits, - or _"
            )
        if not isinstance(target, str) or not VOLUME_TARGET_RE.fullmatch(target):
            raise ConfigError(source, f"{key}.{name}", target, "expected an absolute path")
        # A volume over the container's root (or /proc, /dev...) hides the image itself.
        # normpath keeps a leading '//' (POSIX leaves its meaning open); Linux reads it as '/'.
        if "/" + posixpath.normpath(target).lstrip("/") in ("/", *SYSTEM_DIRS):
            raise ConfigError(source, f"{key}.{name}", target, "cannot mount over a system path")
        volumes[name] = target
    return volumes


def _secrets(source: str, key: str, value: object) -> dict[str, SecretUse]:
    if isinstance(value, list):
        if not all(isinstance(name, str) for name in value):
            raise ConfigError(source, key, value, "expected a list of secret names")
        value = {name: None for name in value}
    _mapping(source, key, value, None)
    assert isinstance(value, dict)
    secrets = {}
    for name, options in value.items():
        where = f"{key}.{name}"
        if not isinstance(name, str) or not SECRET_RE.match(name):
            raise ConfigError(source, where, name, "secret names are letters, digits and _")
        options = options or {}
        _mapping(source, where, options, SECRET_KEYS)
        env = options.get("env", False)
        _bool(source, f"{where}.env", env)
        secrets[name] = SecretUse(env=env)
    return secrets


def _processes(source: str, key: str, value: object, max_replicas: int) -> dict[str, Process]:
    _mapping(source, key, value, None)
    assert isinstance(value, dict)
    processes = {}
    for name, spec in value.items():
        where = f"{key}.{name}"
        if not isinstance(name, str) or not PROCESS_RE.match(name) or name == "web":
            raise ConfigError(
                source, where, name, "process names are short DNS labels other than 'web'"
            )
        _mapping(source, where, spec, PROCESS_KEYS)
        assert isinstance(spec, dict)
        if spec.get("command") is None:
            raise ConfigError(source, f"{where}.command", None, "is required")
        health = _health(source, f"{where}.health", spec.get("health"))
        if health is not None and health.path is not None:
            raise ConfigError(
                source,
                f"{where}.health.path",
                health.path,
                "a process is not routed; give a command",
            )
        processes[name] = Process(
            command=_command(source, f"{where}.command", spec["command"]),
            replicas=replicas(source, f"{where}.replicas", spec.get("replicas", 1), max_replicas),
            health=health,
        )
    return processes


def _build(source: str, key: str, value: object) -> BuildOptions:
    _mapping(source, key, value, BUILD_KEYS)
    assert isinstance(value, dict)
    context = _repo_path(source, f"{key}.context", value.get("context", "."))
    dockerfile = _repo_path(source, f"{key}.dockerfile", value.get("dockerfile", "Dockerfile"))
    target = value.get("target")
    if target is not None and (not isinstance(target, str) or not STAGE_RE.match(target)):
        raise ConfigError(source, f"{key}.target", target, "expected a build stage name")
    args = value.get("args") or {}
    _mapping(source, f"{key}.args", args, None)
    assert isinstance(args, dict)
    for name, item in args.items():
        if not isinstance(name, str) or not BUILD_ARG_RE.match(name):
            raise ConfigError(source, f"{key}.args.{name}", name, "not a valid build arg name")
        if isinstance(item, dict | list) or item is None or "\x00" in str(item):
            raise ConfigError(source, f"{key}.args.{name}", item, "expected a string or number")
    return BuildOptions(
        context=context.strip("/") or ".",
        dockerfile=dockerfile,
        target=target,
        args={name: str(item) for name, item in args.items()},
    )


def _repo_path(source: str, key: str, value: object) -> str:
    if value == ".":
        return "."
    if not isinstance(value, str) or not REPO_PATH_RE.match(value):
        raise ConfigError(source, key, value, "expected a relative path inside the repository")
    return value


def _command(source: str, key: str, value: object) -> tuple[str, ...]:
    """A command as a list of arguments, or a string run by /bin/sh -c (like a Procfile)."""
    if isinstance(value, str) and value.strip():
        return ("/bin/sh", "-c", value.strip())
    if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        return tuple(value)
    raise ConfigError(source, key, value, "expected a command string or a list of arguments")


def _shell_line(source: str, key: str, value: object) -> str | None:
    # These go into a generated Dockerfile's RUN or CMD line, where a newline would start a
    # new instruction.
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\n" in value.strip():
        raise ConfigError(source, key, value, "expected a one-line shell command")
    return value.strip()


def _workdir(source: str, key: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(r"^/[A-Za-z0-9._/-]*\Z", value):
        raise ConfigError(source, key, value, "expected an absolute path")
    return value


def _bool(source: str, key: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(source, key, value, "expected true or false")


def replicas(source: str, key: str, value: object, max_replicas: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= max_replicas:
        raise ConfigError(
            source,
            key,
            value,
            f"expected an integer from 0 to {max_replicas} (NEPHELIOS_MAX_REPLICAS)",
        )
    return value


def _int(source: str, key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(source, key, value, f"expected an integer from {low} to {high}")
    return value


def _mapping(source: str, key: str, value: object, allowed: set[str] | None) -> None:
    if not isinstance(value, dict):
        raise ConfigError(source, key, value, "expected a mapping")
    for name in value:
        if allowed is not None and name not in allowed:
            raise unknown_key(source, key, name, allowed)


# A key shown in an error: a file that is not nephelios.yml at all (NEPHELIOS_CONFIG pointing
# at /etc/shadow parses as a mapping whose keys are whole lines) must not be echoed.
SHOWN_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def unknown_key(source: str, key: str, name: object, allowed: set[str]) -> ConfigError:
    shown = str(name) if SHOWN_KEY_RE.fullmatch(str(name)) else "<key not shown>"
    close = difflib.get_close_matches(shown, sorted(allowed), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    where = shown if key == "<top>" else f"{key}.{shown}"
    return ConfigError(source, where, shown, f"unknown key{hint}")


# --- platform: Let's Encrypt for every app -------------------------------------------------

TLS_KEYS = {"email", "storage", "challenge", "staging", "ca_server"}
TLS_CHALLENGES = ("http", "tls")
LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")


@dataclass(frozen=True)
class TLS:
    """Traefik's ACME certificate resolver, shared by every app that does not opt out."""

    email: str
    storage: str = "/letsencrypt/acme.json"
    challenge: str = "http"
    staging: bool = False
    ca_server: str | None = None

    @property
    def directory(self) -> str:
        if self.ca_server:
            return self.ca_server
        return LETSENCRYPT_STAGING if self.staging else LETSENCRYPT


def parse_tls(source: str, key: str, value: object) -> TLS | None:
    if value is None or value is False:
        return None
    _mapping(source, key, value, TLS_KEYS)
    assert isinstance(value, dict)
    email = value.get("email")
    if not isinstance(email, str) or not EMAIL_RE.match(email):
        raise ConfigError(source, f"{key}.email", email, "expected the ACME account's email")
    storage = value.get("storage", TLS.storage)
    if not isinstance(storage, str) or not re.match(r"^/[A-Za-z0-9._/-]+\.json\Z", storage):
        raise ConfigError(source, f"{key}.storage", storage, "expected an absolute .json path")
    challenge = value.get("challenge", "http")
    if challenge not in TLS_CHALLENGES:
        raise ConfigError(source, f"{key}.challenge", challenge, "expected http or tls")
    staging = value.get("staging", False)
    _bool(source, f"{key}.staging", staging)
    ca_server = value.get("ca_server")
    if ca_server is not None and (
        not isinstance(ca_server, str) or not ca_server.startswith("https://")
    ):
        raise ConfigError(source, f"{key}.ca_server", ca_server, "expected an https:// URL")
    return TLS(email, storage, challenge, staging, ca_server)
