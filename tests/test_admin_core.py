"""Admin request checks (pure) and the durable app file (a real directory, real processes)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from pipeline.apps import AppFile, merge, with_stored
from pipeline.core.admin import (
    choose_rollback,
    parse_create,
    parse_deploy,
    redacted,
    source_keys,
)
from pipeline.core.config import Platform, parse_config
from pipeline.core.deployment import Deployment
from pipeline.errors import AdminError, ConfigError, Conflict, UnknownApp
from pipeline.settings import Settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/acme/site", {"repo": "acme/site"}),
        ("https://github.com/acme/site.git", {"repo": "acme/site"}),
        ("https://github.com/acme/site/", {"repo": "acme/site"}),
        ("acme/site.v2", {"repo": "acme/site.v2"}),
        ("/srv/git/site.git", {"repo": "local/app", "git_url": "/srv/git/site.git"}),
        ("file:///srv/git/site.git", {"repo": "local/app", "git_url": "file:///srv/git/site.git"}),
    ],
)
def test_github_url_forms(url: str, expected: dict[str, str]) -> None:
    assert source_keys(url, "app") == expected


@pytest.mark.parametrize(
    "url", ["http://github.com/a/b", "https://gitlab.com/a/b", "-upload-pack=x", "a/b/c", "./srv/x"]
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(AdminError, match="github_url: expected"):
        source_keys(url, "app")


def test_create_keeps_only_what_was_given_and_defaults_like_the_file() -> None:
    body = {"app_name": "site", "github_url": "acme/site", "app_type": "python", "env": {"A": 1}}
    wanted = parse_create(body, Platform(domain="example.com"), max_replicas=10)
    assert wanted.raw == {"repo": "acme/site", "type": "python", "env": {"A": 1}}
    assert (wanted.app.port, wanted.app.domains) == (8000, ("site.example.com",))
    assert redacted(wanted.app)["env"] == ["A"]


def test_deploy_body_forms() -> None:
    assert parse_deploy(None).ref is None
    assert parse_deploy({"ref": "release/1.2"}).ref == "release/1.2"
    for ref in ("-x", "a..b", "a//b", "x.lock", "a/", "a b", "*"):
        with pytest.raises(AdminError, match="ref:"):
            parse_deploy({"ref": ref})


def _add_many(path: str, prefix: str) -> None:
    for index in range(20):
        AppFile(Path(path)).add(f"{prefix}{index}", {"repo": "acme/x"}, set())


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state" / "apps.json"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_add_many, args=(str(path), p)) for p in "abc"]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    assert len(AppFile(path).read()) == 60
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".apps-")]


def test_add_remove_and_conflicts(tmp_path: Path) -> None:
    store = AppFile(tmp_path / "apps.json")
    store.add("one", {"repo": "acme/one"}, taken=set())
    with pytest.raises(Conflict):
        store.add("one", {"repo": "acme/one"}, taken=set())
    with pytest.raises(Conflict):
        store.add("two", {"repo": "acme/two"}, taken={"two"})
    store.remove("one")
    with pytest.raises(UnknownApp):
        store.remove("one")
    assert json.loads((tmp_path / "apps.json").read_text())["apps"] == {}


def test_the_merged_config_follows_every_rewrite_of_the_app_file(tmp_path: Path) -> None:
    settings = Settings(webhook_secret="s", state_dir=tmp_path)
    config = parse_config({"apps": {"static": {"repo": "acme/static"}}})
    store = AppFile(settings.apps_file)
    assert with_stored(settings, config) is config  # no file yet
    # Same-sized rewrites in quick succession: a stat (size, mtime, a reused inode) may not
    # tell them apart; the merge must still follow each one.
    for name in ("app1", "app2", "app3", "app4"):
        store.add(name, {"repo": f"acme/{name}"}, taken=set())
        assert sorted(with_stored(settings, config).apps) == [name, "static"]
        store.remove(name)
    assert sorted(with_stored(settings, config).apps) == ["static"]


def test_a_broken_file_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "apps.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=str(path)):
        AppFile(path).read()


def test_the_hand_written_file_wins_a_name_clash() -> None:
    config = parse_config({"apps": {"site": {"repo": "acme/site", "port": 81}}})
    merged = merge(config, {"site": {"repo": "acme/other"}, "new": {"repo": "acme/new"}}, "f")
    assert merged.apps["site"].repo == "acme/site"
    assert merged.apps["new"].repo == "acme/new"


def _record(image: str, status: str = "succeeded", trigger: str = "api:deploy") -> Deployment:
    return Deployment(
        id=image, app="a", commit="c", ref="r", trigger=trigger, status=status, image=image
    )


def test_rollback_goes_to_the_build_before_the_live_one_and_further_back_each_time() -> None:
    v0, v1, v2 = _record("a:v0"), _record("a:v1"), _record("a:v2")
    history = [_record("a:v3", status="failed"), v2, v1, v0]  # newest first
    local = {"a:v0", "a:v1", "a:v2", "a:v3"}
    assert choose_rollback(history, "a:v2", local) is v1
    history = [_record("a:v1", trigger="api:rollback"), *history]
    assert choose_rollback(history, "a:v1", local) is v0  # not back to v2
    assert choose_rollback(history, "a:v0", local) is None
    assert choose_rollback(history, "a:v2", {"a:v2", "a:v0"}) is v0  # v1's image was pruned
