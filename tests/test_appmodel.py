"""The app model's pure part: validation of the new nephelios.yml keys, and what they render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.appdata import secret_docker_name
from pipeline.core.admin import parse_create, remove_volumes_asked
from pipeline.core.config import Platform, parse_config
from pipeline.core.render import render_dockerfile, render_edge, render_stack
from pipeline.errors import AdminError, ConfigError, DeployError

TLS = {"email": "ops@example.com"}


def app_config(platform: dict[str, Any] | None = None, **keys: Any) -> Any:
    config = parse_config({"platform": platform or {}, "apps": {"a": {"repo": "o/r", **keys}}})
    return config.apps["a"], config.platform


def stack(
    platform: dict[str, Any] | None = None, secret_names: dict[str, str] | None = None, **keys: Any
) -> dict[str, Any]:
    app, plat = app_config(platform, **keys)
    text = render_stack(
        app, plat, "a:1", 1, {"nephelios.app": "a"}, secret_names or {}, ["/entry"], ["serve", "-v"]
    )
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def labels(**keys: Any) -> dict[str, str]:
    result: dict[str, str] = stack(**keys)["services"]["web"]["deploy"]["labels"]
    return result


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"path_prefixes": ["api"]}, "apps.a.path_prefixes[0]"),
        ({"path_prefixes": ["/a`b"]}, "apps.a.path_prefixes[0]"),
        ({"strip_prefix": True}, "apps.a.strip_prefix"),
        ({"tls": "yes"}, "apps.a.tls"),
        ({"health": {"path": "/h", "command": "true"}}, "apps.a.health"),
        ({"health": {"path": "/h", "retires": 3}}, "apps.a.health.retires"),
        ({"resources": {"memory": "lots"}}, "apps.a.resources.memory"),
        ({"resources": {"memory": "1k"}}, "apps.a.resources.memory"),
        ({"resources": {"cpus": 0}}, "apps.a.resources.cpus"),
        ({"resources": {"cpu": 1}}, "apps.a.resources.cpu"),
        ({"placement": ["node.role = worker"]}, "apps.a.placement[0]"),
        ({"volumes": {"data": "relative/path"}}, "apps.a.volumes.data"),
        ({"volumes": {"Bad Name": "/x"}}, "apps.a.volumes.Bad Name"),
        ({"secrets": ["bad-name"]}, "apps.a.secrets.bad-name"),
        ({"secrets": {"TOKEN": {"as_env": True}}}, "apps.a.secrets.TOKEN.as_env"),
        ({"processes": {"web": {"command": "x"}}}, "apps.a.processes.web"),
        ({"processes": {"worker": {}}}, "apps.a.processes.worker.command"),
        (
            {"processes": {"worker": {"command": "x", "health": {"path": "/h"}}}},
            "apps.a.processes.worker.health.path",
        ),
        (
            {"processes": {"worker": {"command": "x", "replica": 2}}},
            "apps.a.processes.worker.replica",
        ),
        ({"build": {"context": "../outside"}}, "apps.a.build.context"),
        ({"build": {"dockerfile": "/etc/Dockerfile"}}, "apps.a.build.dockerfile"),
        ({"build": {"target": "bad stage"}}, "apps.a.build.target"),
        ({"build": {"args": {"1X": "v"}}}, "apps.a.build.args.1X"),
        ({"build": {"dokerfile": "x"}}, "apps.a.build.dokerfile"),
        ({"run_command": "a\nb"}, "apps.a.run_command"),
        ({"app_workdir": "relative"}, "apps.a.app_workdir"),
    ],
)
def test_bad_app_model_values_name_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        app_config(**raw)
    assert caught.value.key == key
    assert "\n" not in str(caught.value)


def test_unknown_nested_keys_get_a_close_match() -> None:
    with pytest.raises(ConfigError, match="did you mean 'retries'"):
        app_config(health={"path": "/h", "retires": 3})
    with pytest.raises(ConfigError, match="did you mean 'path_prefixes'"):
        app_config(path_prefix=["/a"])


@pytest.mark.parametrize(
    ("tls", "key"),
    [
        ({"email": "nope"}, "platform.tls.email"),
        ({**TLS, "challenge": "dns"}, "platform.tls.challenge"),
        ({**TLS, "staging": "yes"}, "platform.tls.staging"),
        ({**TLS, "storage": "acme.json"}, "platform.tls.storage"),
        ({**TLS, "ca_server": "http://insecure/"}, "platform.tls.ca_server"),
        ({**TLS, "emial": "x"}, "platform.tls.emial"),
    ],
)
def test_bad_tls_settings_name_the_key(tls: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"platform": {"tls": tls}})
    assert caught.value.key == key


def test_path_prefixes_route_below_the_prefix_and_can_strip_it() -> None:
    result = labels(domains=["x.test", "y.test"], path_prefixes=["/api/", "/v2"], strip_prefix=True)
    assert result["traefik.http.routers.a.rule"] == (
        "(Host(`x.test`) || Host(`y.test`)) && "
        "(Path(`/api`) || PathPrefix(`/api/`) || Path(`/v2`) || PathPrefix(`/v2/`))"
    )
    assert result["traefik.http.middlewares.a-strip.stripprefix.prefixes"] == "/api,/v2"
    assert result["traefik.http.routers.a.middlewares"] == "a-strip"
    assert "traefik.http.routers.a.middlewares" not in labels(path_prefixes=["/api"])


def test_tls_routes_https_and_redirects_http_unless_the_app_opts_out() -> None:
    result = labels(platform={"tls": TLS, "https_port": 8443})
    assert result["traefik.http.routers.a.entrypoints"] == "websecure"
    assert result["traefik.http.routers.a.tls.certresolver"] == "letsencrypt"
    assert result["traefik.http.routers.a-http.entrypoints"] == "web"
    assert result["traefik.http.routers.a-http.middlewares"] == "a-https"
    assert result["traefik.http.middlewares.a-https.redirectscheme.scheme"] == "https"
    assert result["traefik.http.middlewares.a-https.redirectscheme.port"] == "8443"
    plain = labels(platform={"tls": TLS}, tls=False)
    assert plain["traefik.http.routers.a.entrypoints"] == "web"
    assert not [k for k in plain if "tls" in k or "a-http" in k]


def test_edge_renders_the_acme_resolver() -> None:
    def args(tls: dict[str, Any]) -> list[str]:
        edge = yaml.safe_load(render_edge(parse_config({"platform": {"tls": tls}}).platform))
        command: list[str] = edge["services"]["traefik"]["command"]
        return command

    http = args({**TLS, "staging": True})
    resolver = "--certificatesresolvers.letsencrypt.acme"
    assert f"{resolver}.email=ops@example.com" in http
    assert f"{resolver}.httpchallenge.entrypoint=web" in http
    assert f"{resolver}.caserver=https://acme-staging-v02.api.letsencrypt.org/directory" in http
    tls = args({**TLS, "challenge": "tls", "storage": "/certs/le.json"})
    assert f"{resolver}.tlschallenge=true" in tls
    assert f"{resolver}.storage=/certs/le.json" in tls
    assert f"{resolver}.caserver=https://acme-v02.api.letsencrypt.org/directory" in tls
    plain = yaml.safe_load(render_edge(parse_config({}).platform))
    assert not [a for a in plain["services"]["traefik"]["command"] if "certificates" in a]


def test_health_path_and_command_become_the_service_healthcheck() -> None:
    web = stack(port=8080, health={"path": "/up", "interval_s": 2})["services"]["web"]
    assert web["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "wget -q -O /dev/null http://127.0.0.1:8080/up" in web["healthcheck"]["test"][1]
    assert web["healthcheck"]["interval"] == "2s"
    command = stack(health={"command": ["/bin/check", "--quick"]})["services"]["web"]
    assert command["healthcheck"]["test"] == ["CMD", "/bin/check", "--quick"]
    assert "healthcheck" not in stack()["services"]["web"]


def test_generated_dockerfiles_have_a_health_check_and_overrides() -> None:
    app, plat = app_config(port=8080)
    assert "HEALTHCHECK" in render_dockerfile(app, plat)
    app, plat = app_config(
        type="python",
        install_command="pip install .",
        build_command="make assets",
        run_command="gunicorn app:app",
        app_workdir="/srv/app",
    )
    text = render_dockerfile(app, plat)
    assert "WORKDIR /srv/app" in text
    assert "RUN pip install ." in text and "RUN make assets" in text
    assert 'CMD ["/bin/sh", "-c", "gunicorn app:app"]' in text
    assert "HEALTHCHECK" in text and "8000" in text


def test_resources_and_placement() -> None:
    deploy = stack(
        resources={"cpus": 1.5, "memory": "512m", "reserve_cpus": 0.25},
        placement=["node.labels.disk == ssd"],
    )["services"]["web"]["deploy"]
    assert deploy["resources"] == {
        "limits": {"cpus": "1.5", "memory": "512M"},
        "reservations": {"cpus": "0.25"},
    }
    assert deploy["placement"]["constraints"] == ["node.labels.disk == ssd"]


def test_processes_share_the_image_and_are_not_routed() -> None:
    services = stack(processes={"worker": {"command": "rq worker", "replicas": 3}})["services"]
    worker = services["worker"]
    assert worker["image"] == services["web"]["image"]
    assert worker["command"] == ["/bin/sh", "-c", "rq worker"]
    assert worker["deploy"]["replicas"] == 3
    assert worker["healthcheck"] == {"disable": True}
    assert not [k for k in worker["deploy"]["labels"] if k.startswith("traefik")]


def test_a_process_may_have_a_health_command_of_its_own() -> None:
    health = {"command": "test -f /tmp/alive", "interval_s": 2, "retries": 5}
    processes = {"worker": {"command": "run", "health": health}, "beat": {"command": "b"}}
    services = stack(processes=processes)["services"]
    assert services["worker"]["healthcheck"] == {
        "test": ["CMD", "/bin/sh", "-c", "test -f /tmp/alive"],
        "interval": "2s",
        "timeout": "3s",
        "retries": 5,
        "start_period": "10s",
    }
    assert services["beat"]["healthcheck"] == {"disable": True}
    assert "healthcheck" not in services["web"]  # the image's own applies to web


def test_volumes_make_the_rollout_stop_first() -> None:
    result = stack(volumes={"data": "/var/lib/data"})
    web = result["services"]["web"]
    assert web["volumes"] == [{"type": "volume", "source": "data", "target": "/var/lib/data"}]
    assert web["deploy"]["update_config"]["order"] == "stop-first"
    assert web["deploy"]["rollback_config"]["order"] == "stop-first"
    assert result["volumes"]["data"]["labels"] == {"nephelios.app": "a"}
    assert stack()["services"]["web"]["deploy"]["update_config"]["order"] == "start-first"


def test_secrets_are_external_and_env_ones_wrap_the_entrypoint() -> None:
    names = {"TOKEN": "a_TOKEN_0123", "KEY": "a_KEY_4567"}
    result = stack(secret_names=names, secrets={"TOKEN": {"env": True}, "KEY": None})
    web = result["services"]["web"]
    assert result["secrets"]["TOKEN"] == {"external": True, "name": "a_TOKEN_0123"}
    assert {s["source"] for s in web["secrets"]} == {"TOKEN", "KEY"}
    # `$$` is compose's escape for `$`: the shell sees $(cat ...) and "$@".
    assert web["entrypoint"][2] == 'export TOKEN="$$(cat /run/secrets/TOKEN)"; exec "$$@"'
    assert web["command"] == ["/entry", "serve", "-v"]
    with pytest.raises(DeployError, match="secret TOKEN of a is not set"):
        stack(secret_names={"KEY": "x"}, secrets=["TOKEN", "KEY"])


def test_secret_names_are_versioned_by_a_keyed_hash() -> None:
    first = secret_docker_name("app", "TOKEN", b"hunter2", b"key")
    assert first == secret_docker_name("app", "TOKEN", b"hunter2", b"key")
    assert first != secret_docker_name("app", "TOKEN", b"hunter3", b"key")
    assert first != secret_docker_name("app", "TOKEN", b"hunter2", b"other key")
    assert first.startswith("app_TOKEN_") and "hunter2" not in first
    assert len(secret_docker_name("a" * 50, "N" * 60, b"v", b"k")) <= 64


def test_readme_example_config_loads(tmp_path: Path) -> None:
    """The README's app-model example is valid nephelios.yml."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("<!-- app-model-example -->")[1]
    example = section.split("```yaml\n")[1].split("```")[0]
    config = parse_config(yaml.safe_load(example))
    assert config.apps["shop"].processes["worker"].replicas == 2


def test_create_body_takes_the_app_model_keys() -> None:
    body = {
        "app_name": "shop",
        "github_url": "acme/shop",
        "path_prefixes": ["/shop"],
        "health": {"path": "/up"},
        "processes": {"worker": {"command": "run-worker"}},
        "secrets": ["TOKEN"],
    }
    wanted = parse_create(body, Platform(domain="example.com"), max_replicas=10)
    assert wanted.app.path_prefixes == ("/shop",)
    assert wanted.app.processes["worker"].command == ("/bin/sh", "-c", "run-worker")
    assert wanted.raw["health"] == {"path": "/up"}  # stored as given, parsed again on load
    with pytest.raises(AdminError, match=r"health\.path"):
        parse_create({**body, "health": {"path": "up"}}, Platform(), max_replicas=10)
    with pytest.raises(AdminError, match="secrets"):
        parse_create({**body, "secrets": [{"a": 1}]}, Platform(), max_replicas=10)
    assert remove_volumes_asked({"app_name": "shop", "volumes": True})
    assert not remove_volumes_asked({"app_name": "shop"})
    with pytest.raises(AdminError, match="volumes"):
        remove_volumes_asked({"app_name": "shop", "volumes": "yes"})
