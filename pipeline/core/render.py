"""Rendering of Dockerfiles and stack files from the Jinja2 templates in `templates/`.

Pure: each function takes config and plain values and returns text. Every string that goes
into a stack file passes through the `q` filter, which emits a JSON string (valid YAML) with
`$` doubled, because `docker stack deploy` interpolates `$VAR` in compose files and env
values must reach the container exactly as written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import jinja2

from pipeline.core.appmodel import Health, Process
from pipeline.core.config import App, Platform
from pipeline.errors import DeployError

STACK_SERVICE = "web"


def templates_dir() -> Path:
    override = os.environ.get("NEPHELIOS_TEMPLATES")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "templates"


def quote(value: object) -> str:
    """Quote a scalar for a compose file: JSON string syntax, `$` escaped as `$$`."""
    return json.dumps(str(value).replace("$", "$$"))


@cache
def _environment(directory: str) -> jinja2.Environment:
    env = jinja2.Environment(  # noqa: S701 - these render YAML and Dockerfiles, not HTML
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = quote
    env.filters["json"] = json.dumps
    return env


def render(template: str, **context: object) -> str:
    return _environment(str(templates_dir())).get_template(template).render(**context)


def render_dockerfile(app: App, platform: Platform) -> str:
    """The Dockerfile for an app whose repository brings none of its own."""
    return render(
        f"Dockerfile.{app.type}.j2",
        app=app,
        base_image=platform.base_images[app.type],
        port=app.port,
        workdir=app.app_workdir,
        install_command=app.install_command,
        build_command=app.build_command,
        run_command=app.run_command,
    )


def traefik_rule(domains: tuple[str, ...], path_prefixes: tuple[str, ...] = ()) -> str:
    hosts = " || ".join(f"Host(`{domain}`)" for domain in domains)
    if not path_prefixes:
        return hosts
    # Traefik's PathPrefix is a plain string prefix (/api would match /apiary): match the
    # prefix itself or anything below it.
    paths = " || ".join(f"Path(`{p}`) || PathPrefix(`{p}/`)" for p in path_prefixes)
    return f"({hosts}) && ({paths})"


def health_test(health: Health | None, port: int) -> list[str]:
    """The healthcheck command for a `health` entry; [] when there is none."""
    if health is None:
        return []
    if health.command:
        return ["CMD", *health.command]
    url = f"http://127.0.0.1:{port}{health.path}"
    # Images differ in what they carry: busybox has wget, Debian slim images python3 or
    # node. The first probe that exists decides; a failing probe falls through to missing
    # ones, which fail too. The path is validated to plain URL characters.
    probes = [
        f"wget -q -O /dev/null {url}",
        f"curl -fsS -o /dev/null {url}",
        f"python3 -c 'import urllib.request as u; u.urlopen(\"{url}\", timeout=5)'",
        f"node -e 'fetch(\"{url}\").then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))'",
    ]
    return ["CMD-SHELL", " 2>/dev/null || ".join(probes)]


def secret_script(app: App) -> str:
    """Shell run before the app's command that exports secrets asked for as env vars."""
    names = [name for name, use in sorted(app.secrets.items()) if use.env]
    if not names:
        return ""
    # Names are validated identifiers, so they are safe in the script as written.
    exports = "; ".join(f'export {name}="$(cat /run/secrets/{name})"' for name in names)
    return f'{exports}; exec "$@"'


def service_commands(
    app: App, image_entrypoint: Sequence[str], image_cmd: Sequence[str]
) -> dict[str, list[str] | None]:
    """The `command` of each service of the stack; None keeps the image's CMD."""
    wrapped = bool(secret_script(app))

    def command(process: Process | None) -> list[str] | None:
        if wrapped:
            # The wrapper replaces the entrypoint, so the image's own comes back as argv.
            return [*image_entrypoint, *(process.command if process else image_cmd)]
        return list(process.command) if process else None

    commands = {name: command(process) for name, process in app.processes.items()}
    commands["web"] = command(None)
    return commands


def render_stack(
    app: App,
    platform: Platform,
    image: str,
    replicas: int,
    labels: Mapping[str, str],
    secret_names: Mapping[str, str] | None = None,
    image_entrypoint: Sequence[str] = (),
    image_cmd: Sequence[str] = (),
) -> str:
    """The stack file that `docker stack deploy` runs for one app.

    `secret_names` maps each of the app's secrets to the versioned Docker secret to use;
    the image's entrypoint and cmd are needed when a secret is exported as a variable.
    """
    missing = sorted(set(app.secrets) - set(secret_names or {}))
    if missing:
        raise DeployError(
            f"secret {missing[0]} of {app.name} is not set "
            f"(nephelios secret set {app.name} {missing[0]} < value-file)"
        )
    return render(
        "stack.yml.j2",
        app=app,
        platform=platform,
        image=image,
        replicas=replicas,
        service_labels=dict(labels),
        rule=traefik_rule(app.domains, app.path_prefixes),
        secret_names=dict(secret_names or {}),
        secret_script=secret_script(app),
        commands=service_commands(app, image_entrypoint, image_cmd),
        health_test=health_test(app.health, app.port),
        process_health={
            name: health_test(process.health, app.port) for name, process in app.processes.items()
        },
        redirect_port=platform.https_port if platform.https_port != 443 else None,
    )


def render_edge(platform: Platform) -> str:
    """The stack file of the Traefik edge router."""
    return render(
        "edge.yml.j2",
        traefik_image=platform.traefik_image,
        edge_network=platform.edge_network,
        http_port=platform.http_port,
        https_port=platform.https_port,
        tls=platform.tls,
    )
