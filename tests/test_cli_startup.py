"""The `nephelios` command refuses bad start-up input in one line on stderr, exit status 2,
before it starts anything: real processes, nothing listening, no engine or Redis touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def nephelios(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "nephelios.yml"
    if not config.exists():
        config.write_text("apps: {web: {repo: acme/web}}\n")
    environ = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "NEPHELIOS_CONFIG": str(config),
        "NEPHELIOS_STATE_DIR": str(tmp_path / "state"),
        "NEPHELIOS_WEBHOOK_SECRET": "s",
        # Nothing may be reached: a refused start-up fails before any connection, and should
        # a check regress, `up` finds no engine and binds only a port of this test's own.
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "NEPHELIOS_PORT": os.environ.get("NEPHELIOS_TEST_CLI_PORT", "21010"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "webhooks.cli", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


# --- 8. a broken <state>/apps.json refuses start-up -----------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"ttbad": {"repo": 5}}', "apps.json: apps: expected a mapping"),
        ('{"version": 1, "apps": {"ttbad": {"repo": 5}}}', "apps.ttbad.repo: expected"),
        ("not json", "apps.json: <file>: not JSON"),
        ('{"version": 1, "apps": {"nephelios": {"repo": "a/b"}}}', "are reserved"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "worker", "up"])
def test_a_broken_apps_file_refuses_start_up(
    tmp_path: Path, command: str, text: str, words: str
) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "apps.json").write_text(text)
    assert words in one_line_refusal(nephelios(tmp_path, command))


# --- 9. a token with control characters: one line, never the token ----------------------------


def test_the_client_refuses_a_token_with_a_carriage_return_unseen(tmp_path: Path) -> None:
    result = nephelios(tmp_path, "apps", NEPHELIOS_ADMIN_TOKEN="hunter2\r")
    assert "NEPHELIOS_ADMIN_TOKEN: contains control characters" in one_line_refusal(result)
    assert "hunter2" not in result.stderr + result.stdout
