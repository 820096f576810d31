"""Apps created through the admin API, kept durably beside nephelios.yml, never inside it.

Where: one JSON file, `<state dir>/apps.json` (mode 0600: env values may be secrets), holding
for each app the mapping the caller gave, in nephelios.yml's keys. Why a file and not Redis:
Redis here is a queue and a cache of deployment records that may run without persistence,
and losing it must not lose apps; the state directory already holds what must survive (git
caches, the generated webhook secret) and is shared by the receiver and the workers of a
host. Why not nephelios.yml: it is the user's hand-written file, comments and all.

Writes are read-modify-write under an exclusive `flock` on `apps.lock`, and replace the file
atomically (write a temporary file in the same directory, fsync, rename), so a reader never
sees half a file and two writers never lose each other's change. Readers take no lock.

`load_full_config(settings)` is the one way the receiver and the workers see all apps:
nephelios.yml, plus the stored apps, validated by the same `parse_app`. A name declared in
nephelios.yml wins over a stored one (logged), because the file is what the user wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core.appmodel import DEFAULT_MAX_REPLICAS
from pipeline.core.config import App, Config, check_routes, load_config, parse_app
from pipeline.errors import ConfigError, ConfigSyntaxError, Conflict, UnknownApp
from pipeline.settings import Settings

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class AppFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    def read(self) -> dict[str, dict[str, Any]]:
        """The stored apps by name; an absent file means none."""
        return self.parse(self.read_bytes())

    def read_bytes(self) -> bytes | None:
        """The file's content, None when it does not exist."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(str(self.path), "<file>", str(self.path), exc.strerror or "") from exc

    def parse(self, content: bytes | None) -> dict[str, dict[str, Any]]:
        if content is None:
            return {}
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigSyntaxError(str(self.path), f"byte {exc.start}", "not UTF-8") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(str(self.path), "<file>", str(self.path), f"not JSON: {exc}") from exc
        apps = data.get("apps") if isinstance(data, dict) else None
        if not isinstance(apps, dict):
            raise ConfigError(str(self.path), "apps", type(apps).__name__, "expected a mapping")
        return apps

    def add(self, name: str, raw: dict[str, Any], taken: set[str]) -> None:
        """Store a new app; Conflict when the name is stored already or in `taken`."""
        with self._locked():
            apps = self.read()
            if name in apps or name in taken:
                raise Conflict(f"app {name!r} exists already")
            apps[name] = raw
            self._write(apps)

    def remove(self, name: str) -> None:
        with self._locked():
            apps = self.read()
            if name not in apps:
                raise UnknownApp(f"no stored app {name!r}")
            del apps[name]
            self._write(apps)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, apps: dict[str, dict[str, Any]]) -> None:
        text = json.dumps({"version": FORMAT_VERSION, "apps": apps}, indent=2, sort_keys=True)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".apps-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp makes it 0600
                handle.write(text + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise


def merge(
    config: Config,
    stored: dict[str, dict[str, Any]],
    source: str,
    max_replicas: int = DEFAULT_MAX_REPLICAS,
) -> Config:
    """`config` plus the stored apps; nephelios.yml's apps win a name clash."""
    apps: dict[str, App] = dict(config.apps)
    for name, raw in stored.items():
        if name in apps:
            log.warning("%s: app %r is also in %s; using the file's", source, name, config.source)
            continue
        app = parse_app(source, name, raw, config.platform, None, max_replicas)
        check_routes(source, apps, app)
        apps[name] = app
    return Config(platform=config.platform, apps=apps, source=config.source)


def with_stored(settings: Settings, config: Config) -> Config:
    """`config` plus the stored apps, merged again only when the app file's content changed.

    The receiver calls this on every delivery. The file is small; comparing its bytes with
    those of the last merge is cheap and, unlike a stat, cannot be fooled by rewrites within
    one timestamp tick that reuse an inode and keep the size.
    """
    app_file = AppFile(settings.apps_file)
    content = app_file.read_bytes()
    if content is None:
        return config
    # The replicas cap is part of the key: it decides what the merge accepts.
    key = f"{app_file.path}#{settings.max_replicas}"
    cached = _merged.get(key)
    if cached is not None and cached[0] is config and cached[1] == content:
        return cached[2]
    merged = merge(config, app_file.parse(content), str(app_file.path), settings.max_replicas)
    _merged[key] = (config, content, merged)
    return merged


# Per app file and replicas cap: the config merged into, the file's content then, the result.
_merged: dict[str, tuple[Config, bytes, Config]] = {}


def load_full_config(settings: Settings) -> Config:
    """nephelios.yml plus the apps created through the admin API."""
    return with_stored(settings, load_config(settings.config_path, settings.max_replicas))


def stored_names(settings: Settings) -> set[str]:
    return set(AppFile(settings.apps_file).read())
