"""Rendering: Dockerfiles per type and the stack file, read back as YAML."""

from __future__ import annotations

import yaml

from pipeline.core.config import parse_config
from pipeline.core.render import render_dockerfile, render_edge, render_stack

CONFIG = parse_config(
    {
        "platform": {"domain": "apps.test", "edge_network": "edge-net", "http_port": 18080},
        "apps": {
            "site": {"repo": "acme/site", "port": 8080, "domains": ["a.test", "b.test"]},
            "api": {
                "repo": "acme/api",
                "type": "python",
                "env": {"DOLLAR": "pa$$word ${HOME}", "QUOTES": 'it\'s "quoted"\nnext'},
            },
        },
    }
)


def stack(app: str, replicas: int = 2) -> dict:  # type: ignore[type-arg]
    rendered = render_stack(
        CONFIG.apps[app], CONFIG.platform, f"{app}:0123456789ab", replicas, {"nephelios.app": app}
    )
    return yaml.safe_load(rendered)  # type: ignore[no-any-return]


def test_static_dockerfile_serves_the_port_from_the_base_image() -> None:
    text = render_dockerfile(CONFIG.apps["site"], CONFIG.platform)
    assert text.splitlines()[1] == "FROM nephelios/busybox:local"
    assert '"-p", "8080"' in text


def test_python_and_nodejs_dockerfiles_use_their_base_images() -> None:
    assert "FROM python:3.12-slim" in render_dockerfile(CONFIG.apps["api"], CONFIG.platform)


def test_stack_routes_every_domain_to_the_app_port() -> None:
    service = stack("site")["services"]["web"]
    labels = service["deploy"]["labels"]
    assert labels["traefik.http.routers.site.rule"] == "Host(`a.test`) || Host(`b.test`)"
    assert labels["traefik.http.services.site.loadbalancer.server.port"] == "8080"
    assert labels["traefik.swarm.network"] == "edge-net"
    assert service["deploy"]["replicas"] == 2
    assert service["image"] == "site:0123456789ab"


def test_stack_rolls_out_start_first_and_rolls_back_on_failure() -> None:
    deploy = stack("site")["services"]["web"]["deploy"]
    assert deploy["update_config"]["order"] == "start-first"
    assert deploy["update_config"]["failure_action"] == "rollback"


def test_env_values_survive_yaml_and_compose_interpolation() -> None:
    env = stack("api")["services"]["web"]["environment"]
    # `docker stack deploy` turns `$$` back into `$`; everything else is literal.
    assert env["DOLLAR"] == "pa$$$$word $${HOME}"
    assert env["QUOTES"] == 'it\'s "quoted"\nnext'


def test_edge_stack_publishes_in_host_mode() -> None:
    edge = yaml.safe_load(render_edge(CONFIG.platform))
    ports = edge["services"]["traefik"]["ports"]
    assert {"target": 80, "published": 18080, "protocol": "tcp", "mode": "host"} in ports
