"""Process settings from the environment, read once at start-up.

Secrets are held here and nowhere else; `__repr__` names which ones are set, never their
values, so a settings object can be logged. Each secret may instead be given as
`<NAME>_FILE`, the path of a file holding it (a Docker secret under /run/secrets), the
convention of the official Docker images; giving both is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

# nephelios.yml, `/scale` and `/create` refuse more replicas than NEPHELIOS_MAX_REPLICAS,
# DEFAULT_MAX_REPLICAS when unset (re-exported here for callers of Settings).
from pipeline.core.appmodel import DEFAULT_MAX_REPLICAS as DEFAULT_MAX_REPLICAS
from pipeline.errors import ConfigError

QUEUE_NAME = "nephelios-deploy"
GITHUB_API_URL = "https://api.github.com"


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "nephelios"


@dataclass(frozen=True)
class Settings:
    config_path: Path = Path("nephelios.yml")
    redis_url: str = "redis://127.0.0.1:6379/0"
    port: int = 3030
    state_dir: Path = field(default_factory=_default_state_dir)
    queue_name: str = QUEUE_NAME
    webhook_secret: str = field(default="", repr=False)
    admin_token: str = field(default="", repr=False)
    # Worker side: GitHub commit statuses and private fetches (issue 4).
    github_token: str = field(default="", repr=False)
    github_api_url: str = GITHUB_API_URL
    public_url: str | None = None
    max_replicas: int = DEFAULT_MAX_REPLICAS

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        port_text = env.get("NEPHELIOS_PORT", "3030")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError("environment", "NEPHELIOS_PORT", port_text, "expected a TCP port")
        state = env.get("NEPHELIOS_STATE_DIR")
        max_text = env.get("NEPHELIOS_MAX_REPLICAS", str(DEFAULT_MAX_REPLICAS))
        if not max_text.isdigit() or not 0 < int(max_text) <= 1000:
            raise ConfigError(
                "environment", "NEPHELIOS_MAX_REPLICAS", max_text, "expected 1 to 1000"
            )
        return cls(
            config_path=Path(env.get("NEPHELIOS_CONFIG", "nephelios.yml")),
            redis_url=_redis_url(env.get("REDIS_URL", "redis://127.0.0.1:6379/0")),
            port=int(port_text),
            state_dir=Path(state) if state else _default_state_dir(),
            queue_name=env.get("NEPHELIOS_QUEUE", QUEUE_NAME),
            webhook_secret=_secret(env, "NEPHELIOS_WEBHOOK_SECRET"),
            # Tokens travel in HTTP headers, which carry ASCII only.
            admin_token=_secret(env, "NEPHELIOS_ADMIN_TOKEN", ascii_only=True),
            github_token=_secret(env, "NEPHELIOS_GITHUB_TOKEN", ascii_only=True),
            github_api_url=env.get("NEPHELIOS_GITHUB_API_URL", GITHUB_API_URL),
            public_url=env.get("NEPHELIOS_PUBLIC_URL") or None,
            max_replicas=int(max_text),
        )

    def __repr__(self) -> str:
        return (
            f"Settings(config={str(self.config_path)!r}, port={self.port}, "
            f"state_dir={str(self.state_dir)!r}, queue={self.queue_name!r}, "
            f"webhook_secret={'set' if self.webhook_secret else 'unset'}, "
            f"admin_token={'set' if self.admin_token else 'unset'}, "
            f"github_token={'set' if self.github_token else 'unset'})"
        )

    @property
    def git_cache_dir(self) -> Path:
        return self.state_dir / "git"

    @property
    def apps_file(self) -> Path:
        """Apps created through the admin API (see `pipeline.apps`)."""
        return self.state_dir / "apps.json"


def _redis_url(url: str) -> str:
    """REDIS_URL as redis-py's `from_url` reads it; checked here so that a typo is one line at
    start-up, not a traceback from the first connection. The URL may hold a password, so the
    error shows only its scheme."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        db = parts.path.strip("/")
    except ValueError:
        parts, db = None, ""
    usable = parts is not None and (
        (parts.scheme in ("redis", "rediss") and bool(parts.hostname) and (not db or db.isdigit()))
        or (parts.scheme == "unix" and parts.path.startswith("/"))
    )
    if not usable:
        shown = f"{parts.scheme}://..." if parts is not None and parts.scheme else "<not a URL>"
        raise ConfigError(
            "environment", "REDIS_URL", shown, "expected redis://HOST:PORT/DB or unix:///PATH"
        )
    return url


def _secret(env: dict[str, str], name: str, ascii_only: bool = False) -> str:
    """A secret from the environment, or from the file that `<name>_FILE` names."""
    file_name = f"{name}_FILE"
    value, path = env.get(name, ""), env.get(file_name, "")
    if value and path:
        raise ConfigError("environment", name, "<hidden>", f"{file_name} is set too; set one")
    key, shown = (file_name, path) if path else (name, "<hidden>")
    if path:
        value = _secret_file(file_name, path)
    value = _without_control_characters(key, shown, value)
    # Each of these makes a secret that can never match what the other side sends.
    if value != value.strip() or value.startswith("\ufeff"):
        raise ConfigError("environment", key, shown, "has leading or trailing blanks or a BOM")
    if ascii_only and not value.isascii():
        raise ConfigError("environment", key, shown, "must be ASCII (it is sent in HTTP headers)")
    return value


def _without_control_characters(key: str, shown: str, value: str) -> str:
    """Control characters (a stray \\r from a Windows file, a newline pasted with the value)
    would make an invalid HTTP header or a wrong HMAC key later; refuse them now, showing
    `shown` (the file's path or a placeholder), never the value."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise ConfigError("environment", key, shown, "contains control characters")
    return value


# Far above any token; a bound so that a path such as /dev/zero fails instead of filling memory.
MAX_SECRET_FILE_BYTES = 64 * 1024


def _secret_file(file_name: str, path: str) -> str:
    """The content of a secret file less one trailing newline, which `echo x > file` leaves.
    Errors name the variable and the path; never the content, nor an error quoting it."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            "environment", file_name, path, f"cannot read it: {exc.strerror}"
        ) from exc
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError("environment", file_name, path, "the file is larger than 64 KiB")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        # Not chained: the decode error quotes a byte of the secret.
        raise ConfigError("environment", file_name, path, "the file is not UTF-8 text") from None
    text = text.removesuffix("\n")
    if not text:
        raise ConfigError("environment", file_name, path, "the file is empty")
    return text
