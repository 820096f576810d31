"""Start-up and admin validation found lacking by a hostile tester: each test names the defect."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.admin import parse_create
from pipeline.core.config import Platform, load_config, parse_config
from pipeline.errors import AdminError, ConfigError


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
