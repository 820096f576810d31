"""nephelios.yml validation: defaults, and errors that name the file, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import load_config, parse_config
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nephelios.yml"
    path.write_text(text)
    return path


def test_shipped_config_loads() -> None:
    config = load_config(ROOT / "nephelios.yml")
    assert "hello" in config.apps
    assert config.apps["hello"].git_url == str(ROOT / ".nephelios/examples/hello.git")


def test_defaults_fill_in() -> None:
    config = parse_config({"apps": {"web": {"repo": "acme/web"}}})
    app = config.apps["web"]
    assert (app.branch, app.type, app.port, app.replicas) == ("main", "static", 80, 1)
    assert app.domains == ("web.localhost",)
    assert app.clone_url(config.platform) == "https://github.com/acme/web.git"


def test_type_sets_default_port_and_domains_follow_platform() -> None:
    config = parse_config(
        {
            "platform": {"domain": "Apps.Example.com"},
            "apps": {"api": {"repo": "a/b", "type": "python"}},
        }
    )
    assert config.apps["api"].port == 8000
    assert config.apps["api"].domains == ("api.apps.example.com",)


def test_env_values_are_kept_as_strings() -> None:
    config = parse_config({"apps": {"w": {"repo": "a/b", "env": {"A": 1, "B": True, "C": "x y"}}}})
    assert dict(config.apps["w"].env) == {"A": "1", "B": "true", "C": "x y"}


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("apps: {web: {repo: acme/web, port: eighty}}", "apps.web.port", "'eighty'"),
        ("apps: {web: {repo: acme/web, port: 70000}}", "apps.web.port", "70000"),
        ("apps: {web: {repo: acme/web, replicas: yes}}", "apps.web.replicas", "True"),
        ("apps: {web: {repo: not-a-repo}}", "apps.web.repo", "'not-a-repo'"),
        ("apps: {web: {}}", "apps.web.repo", "None"),
        ("apps: {Web_1: {repo: a/b}}", "apps.Web_1", "'Web_1'"),
        ("apps: {web: {repo: a/b, type: ruby}}", "apps.web.type", "'ruby'"),
        (
            "apps: {web: {repo: a/b, domains: ['bad domain']}}",
            "apps.web.domains[0]",
            "'bad domain'",
        ),
        (
            "apps: {web: {repo: a/b, branch: '--upload-pack=x'}}",
            "apps.web.branch",
            "'--upload-pack=x'",
        ),
        ("apps: {web: {repo: a/b, env: {'1X': v}}}", "apps.web.env.1X", "'1X'"),
        ("platform: {http_port: 0}", "platform.http_port", "0"),
        ("platform: {domian: x}", "platform.domian", "'domian'"),
        ("apps: {web: {repo: a/b, prot: 80}}", "apps.web.prot", "'prot'"),
        ("apps: [web]", "apps", "['web']"),
    ],
)
def test_bad_values_name_file_key_and_value(
    tmp_path: Path, text: str, key: str, value: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: ")
    assert f"(got {value})" in message
    assert "\n" not in message


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'port'"):
        load_config(write(tmp_path, "apps: {web: {repo: a/b, prot: 80}}"))


def test_invalid_yaml_and_missing_file_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "apps: {web: [}"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yml")


def test_secret_env_values_do_not_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"apps": {"w": {"repo": "a/b", "env": {"TOKEN": {"nested": "hunter2"}}}}})
    assert "hunter2" not in str(caught.value)


# --- intake keys: tags, releases, paths -----------------------------------------------------


def test_intake_keys_default_off_and_accept_a_glob_or_a_list() -> None:
    apps = parse_config(
        {
            "apps": {
                "plain": {"repo": "a/b"},
                "mono": {"repo": "a/b", "tags": "v*", "releases": True, "paths": ["svc/api"]},
            }
        }
    ).apps
    assert (apps["plain"].tags, apps["plain"].releases, apps["plain"].paths) == ((), False, ())
    assert (apps["mono"].tags, apps["mono"].releases, apps["mono"].paths) == (
        ("v*",),
        True,
        ("svc/api",),
    )


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("apps: {web: {repo: a/b, releases: 'yes'}}", "apps.web.releases", "'yes'"),
        ("apps: {web: {repo: a/b, tags: []}}", "apps.web.tags", "[]"),
        ("apps: {web: {repo: a/b, tags: ['-v*']}}", "apps.web.tags[0]", "'-v*'"),
        ("apps: {web: {repo: a/b, paths: ['/etc']}}", "apps.web.paths[0]", "'/etc'"),
        ("apps: {web: {repo: a/b, paths: ['a/../b']}}", "apps.web.paths[0]", "'a/../b'"),
        ("apps: {web: {repo: a/b, path: [src]}}", "apps.web.path", "'path'"),
    ],
)
def test_bad_intake_keys_name_file_key_and_value(
    tmp_path: Path, text: str, key: str, value: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {key}: ")
    assert f"(got {value})" in str(caught.value)
