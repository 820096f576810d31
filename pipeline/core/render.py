"""Rendering of Dockerfiles and stack files from the Jinja2 templates in `templates/`.

Pure: each function takes config and plain values and returns text. Every string that goes
into a stack file passes through the `q` filter, which emits a JSON string (valid YAML) with
`$` doubled, because `docker stack deploy` interpolates `$VAR` in compose files and env
values must reach the container exactly as written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import jinja2

from pipeline.core.config import App, Platform

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
    )


def traefik_rule(domains: tuple[str, ...]) -> str:
    return " || ".join(f"Host(`{domain}`)" for domain in domains)


def render_stack(
    app: App,
    platform: Platform,
    image: str,
    replicas: int,
    labels: Mapping[str, str],
) -> str:
    """The stack file that `docker stack deploy` runs for one app."""
    return render(
        "stack.yml.j2",
        app=app,
        platform=platform,
        image=image,
        replicas=replicas,
        service_labels=dict(labels),
        rule=traefik_rule(app.domains),
    )


def render_edge(platform: Platform) -> str:
    """The stack file of the Traefik edge router."""
    return render(
        "edge.yml.j2",
        traefik_image=platform.traefik_image,
        edge_network=platform.edge_network,
        http_port=platform.http_port,
        https_port=platform.https_port,
    )
