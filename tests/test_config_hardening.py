"""Start-up and admin validation found lacking by a hostile tester: each test names the defect."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.apps import merge
from pipeline.core.admin import parse_create
from pipeline.core.config import Platform, load_config, parse_config, read_yaml
from pipeline.errors import AdminError, ConfigError
from pipeline.settings import Settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nephelios.yml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return message


# --- 1. reserved app names ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nephelios", "nephelios-edge"])
def test_reserved_app_names_are_refused_in_the_file(tmp_path: Path, name: str) -> None:
    message = refused(tmp_path, f"apps: {{{name}: {{repo: a/b}}}}")
    assert f"apps.{name}: names starting with 'nephelios' are reserved" in message


def test_reserved_app_names_are_refused_by_create() -> None:
    body = {"app_name": "nephelios-x", "github_url": "a/b"}
    with pytest.raises(AdminError, match="reserved"):
        parse_create(body, Platform(), 10)


def test_names_merely_containing_nephelios_are_fine() -> None:
    assert "my-nephelios" in parse_config({"apps": {"my-nephelios": {"repo": "a/b"}}}).apps


# --- 2. one replicas cap: NEPHELIOS_MAX_REPLICAS ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("apps: {web: {repo: a/b, replicas: 11}}", "apps.web.replicas"),
        (
            "apps: {web: {repo: a/b, processes: {jobs: {command: run, replicas: 50}}}}",
            "apps.web.processes.jobs.replicas",
        ),
        ("apps: {web: {repo: a/b, replicas: 100000}}", "apps.web.replicas"),
    ],
)
def test_replicas_above_the_cap_are_refused_naming_the_cap(
    tmp_path: Path, text: str, key: str
) -> None:
    message = refused(tmp_path, text)
    assert f"{key}: expected an integer from 0 to 10 (NEPHELIOS_MAX_REPLICAS)" in message


def test_the_cap_follows_the_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "apps: {web: {repo: a/b, replicas: 50}}")
    assert load_config(path, max_replicas=50).apps["web"].replicas == 50
    with pytest.raises(ConfigError, match="from 0 to 49"):
        load_config(path, max_replicas=49)


def test_create_names_the_configured_cap_for_huge_replicas() -> None:
    body = {"app_name": "web", "github_url": "a/b", "replicas": 10**9}
    with pytest.raises(AdminError, match=r"replicas: expected an integer from 0 to 7 "):
        parse_create(body, Platform(), 7)
    body = {
        "app_name": "web",
        "github_url": "a/b",
        "processes": {"q": {"command": "x", "replicas": 8}},
    }
    with pytest.raises(AdminError, match=r"processes.q.replicas: .* from 0 to 7"):
        parse_create(body, Platform(), 7)


# --- 3. env names and values, volume targets ------------------------------------------------


@pytest.mark.parametrize("name", ["A=B", "A\x00", "A\n", "", "1A"])
def test_bad_env_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid variable name"):
        parse_config({"apps": {"w": {"repo": "a/b", "env": {name: "v"}}}})


def test_env_values_with_nul_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"apps": {"w": {"repo": "a/b", "env": {"TOKEN": "hunter2\x00y"}}}})
    assert "apps.w.env.TOKEN: contains a NUL character" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_create_refuses_nul_env_values_without_echoing_them() -> None:
    body = {"app_name": "web", "github_url": "a/b", "env": {"TOKEN": "hunter2\x00y"}}
    with pytest.raises(AdminError) as caught:
        parse_create(body, Platform(), 10)
    assert str(caught.value) == "env.TOKEN: contains a NUL character"


@pytest.mark.parametrize(
    "target", ["/", "//", "/./", "/proc", "/data\x00", "/a\nb", "data", "/a:b"]
)
def test_unusable_volume_targets_are_refused(target: str) -> None:
    with pytest.raises(ConfigError, match=r"apps\.w\.volumes\.data: "):
        parse_config({"apps": {"w": {"repo": "a/b", "volumes": {"data": target}}}})


def test_a_plain_volume_target_is_kept() -> None:
    app = parse_config({"apps": {"w": {"repo": "a/b", "volumes": {"data": "/var/lib/app"}}}})
    assert dict(app.apps["w"].volumes) == {"data": "/var/lib/app"}


# --- 4. REDIS_URL -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["notaurl", "http://127.0.0.1:6379", "redis://", "redis://h:port/0", "redis://h/x", "unix:x"],
)
def test_unusable_redis_urls_are_refused_in_one_line(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REDIS_URL": url})
    assert str(caught.value).startswith("environment: REDIS_URL: expected redis://")
    assert "\n" not in str(caught.value)


def test_a_redis_password_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REDIS_URL": "redis://:hunter2@h:notaport/0"})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/11", "rediss://:pw@redis.example:6380", "unix:///run/r.sock"]
)
def test_usable_redis_urls_pass(url: str) -> None:
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


# --- 5. YAML errors: one line, the place, never the file's content ---------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("domain: [", "line 1 column 10"),
        ("apps:\n  web: !!python/object/apply:os.system ['id']\n", "line 2 column 8"),
        ("apps:\n\tweb: {}\n", "line 2 column 1"),
        ("apps: {web: {repo: a/b}}\x00", "character 25"),
    ],
)
def test_yaml_syntax_errors_are_one_line_naming_line_and_column(
    tmp_path: Path, text: str, where: str
) -> None:
    message = refused(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'nephelios.yml'}: {where}: not valid YAML: ")


def test_a_file_that_is_not_nephelios_yml_is_not_echoed(tmp_path: Path) -> None:
    shadow = "root:$6$salt$SECRETHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
    assert "SECRETHASH" not in refused(tmp_path, shadow)
    assert "SECRETHASH" not in refused(tmp_path, "SECRETHASH and more words\n")
    path = tmp_path / "binary.yml"
    path.write_bytes(b"\xff\xfeSECRETHASH")
    with pytest.raises(ConfigError, match="not UTF-8") as caught:
        load_config(path)
    assert "SECRETHASH" not in str(caught.value)


# --- 6. duplicate keys and domains ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("apps:\n  web: {repo: a/b}\n  web: {repo: c/d}\n", "line 3 column 3"),
        ("apps: {web: {repo: a/b, replicas: 1, replicas: 2}}", "line 1 column 38"),
        ("platform: {}\nplatform: {}\n", "line 2 column 1"),
    ],
)
def test_duplicate_keys_are_refused(tmp_path: Path, text: str, where: str) -> None:
    message = refused(tmp_path, text)
    assert f": {where}: not valid YAML: " in message
    assert "given twice" in message


def test_merge_keys_may_still_be_overridden() -> None:
    data = read_yaml("x", "a: &b {repo: a/b, replicas: 1}\nc: {<<: *b, replicas: 2}\n")
    assert data == {"a": {"repo": "a/b", "replicas": 1}, "c": {"repo": "a/b", "replicas": 2}}


def test_two_apps_claiming_one_domain_are_refused(tmp_path: Path) -> None:
    text = "apps:\n  a: {repo: a/b, domains: [x.example]}\n  b: {repo: c/d, domains: [X.example]}\n"
    message = refused(tmp_path, text)
    assert "apps.b.domains: already routed to app 'a' (got 'x.example')" in message


def test_one_domain_under_different_path_prefixes_is_fine() -> None:
    apps = {
        "site": {"repo": "a/b", "domains": ["x.example"]},
        "api": {"repo": "a/c", "domains": ["x.example"], "path_prefixes": ["/api"]},
    }
    assert set(parse_config({"apps": apps}).apps) == {"site", "api"}
    apps["api2"] = {"repo": "a/d", "domains": ["x.example"], "path_prefixes": ["/api/"]}
    with pytest.raises(ConfigError, match="already routed to app 'api'"):
        parse_config({"apps": apps})


def test_a_stored_app_claiming_a_declared_domain_is_refused() -> None:
    config = parse_config({"apps": {"a": {"repo": "a/b"}}})
    with pytest.raises(ConfigError, match=r"apps\.s\.domains: already routed to app 'a'"):
        merge(config, {"s": {"repo": "c/d", "domains": ["a.localhost"]}}, "apps.json")


# --- 7. image references and the registry ----------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "key"),
    [
        ("{registry: 'a b'}", "platform.registry"),
        ("{registry: '-x:5000'}", "platform.registry"),
        ("{registry: 'host:port'}", "platform.registry"),
        ("{traefik_image: '--privileged'}", "platform.traefik_image"),
        ("{traefik_image: 'Traefik:v3'}", "platform.traefik_image"),
        ('{base_images: {static: "busybox\\nRUN id"}}', "platform.base_images.static"),
        ("{base_images: {python: 'python:3.12 AS x'}}", "platform.base_images.python"),
    ],
)
def test_bad_images_and_registries_are_refused(tmp_path: Path, platform: str, key: str) -> None:
    message = refused(tmp_path, f"platform: {platform}\n")
    assert f": {key}: expected " in message


def test_real_images_and_registries_pass() -> None:
    platform = parse_config(
        {
            "platform": {
                "registry": "10.0.0.1:5000/team/",
                "traefik_image": "registry.example.com:5000/traefik:v3.1@sha256:" + "a" * 64,
                "base_images": {"python": "python:3.12-slim", "nodejs": "library/node__x:20"},
            }
        }
    ).platform
    assert platform.registry == "10.0.0.1:5000/team/"
    assert platform.base_images["python"] == "python:3.12-slim"
    assert parse_config({"platform": {"registry": "localhost:5000"}}).platform.registry


# --- 9. secrets with control characters -------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["NEPHELIOS_ADMIN_TOKEN", "NEPHELIOS_WEBHOOK_SECRET", "NEPHELIOS_GITHUB_TOKEN"]
)
@pytest.mark.parametrize("value", ["hunter2\r", "hunter2\n", "hun\x00ter2", "hunter2\x7f"])
def test_secrets_with_control_characters_are_refused_unseen(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert str(caught.value).startswith(f"environment: {name}: contains control characters")
    assert "hunter" not in str(caught.value)
