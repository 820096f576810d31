"""The `nephelios` command refuses bad start-up input in one line on stderr, exit status 2,
before it starts anything: real processes, nothing listening, no engine or Redis touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.settings import Settings
from webhooks.up import child_environment


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


# --- 9b. secrets from files (Docker secrets): one line naming the variable, never the value --


@pytest.mark.parametrize("command", ["serve", "worker", "apps"])
def test_a_secret_set_twice_refuses_start_up_unseen(tmp_path: Path, command: str) -> None:
    (tmp_path / "token").write_text("hunter2\n")
    token = {
        "NEPHELIOS_ADMIN_TOKEN": "hunter3",
        "NEPHELIOS_ADMIN_TOKEN_FILE": str(tmp_path / "token"),
    }
    result = nephelios(tmp_path, command, **token)
    refusal = one_line_refusal(result)
    assert "NEPHELIOS_ADMIN_TOKEN: NEPHELIOS_ADMIN_TOKEN_FILE is set too" in refusal
    assert "hunter" not in result.stderr + result.stdout


def test_serve_names_an_unreadable_secret_file_and_its_path(tmp_path: Path) -> None:
    path = str(tmp_path / "missing")
    result = nephelios(
        tmp_path, "serve", NEPHELIOS_WEBHOOK_SECRET="", NEPHELIOS_WEBHOOK_SECRET_FILE=path
    )
    reason = f"cannot read it: No such file or directory (got {path!r})"
    assert f"NEPHELIOS_WEBHOOK_SECRET_FILE: {reason}" in one_line_refusal(result)


# --- 10. small start-up defects -------------------------------------------------------------


def test_serve_refuses_to_start_without_a_webhook_secret(tmp_path: Path) -> None:
    result = nephelios(tmp_path, "serve", "--host", "127.0.0.1", NEPHELIOS_WEBHOOK_SECRET="")
    assert "NEPHELIOS_WEBHOOK_SECRET is not set: set it to" in one_line_refusal(result)


@pytest.mark.parametrize("workers", ["100000", "65", "-1", "two"])
def test_up_caps_the_number_of_workers(tmp_path: Path, workers: str) -> None:
    result = nephelios(tmp_path, "up", "--workers", workers)
    assert result.returncode == 2
    assert f"--workers: expected 0 to 64 (got {workers!r})" in result.stderr


def test_an_unknown_run_command_prints_usage_before_any_bootstrap() -> None:
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [str(root / "run"), "bogus"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: ./run up")
    assert result.stderr.count("\n") == 1, result.stderr  # no bootstrap lines before it


def test_up_says_whether_it_generated_or_read_the_webhook_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    first = child_environment(settings)["NEPHELIOS_WEBHOOK_SECRET"]
    assert (
        capsys.readouterr().out
        == f"webhook secret: generated, in {tmp_path}/state/webhook-secret\n"
    )
    assert child_environment(settings)["NEPHELIOS_WEBHOOK_SECRET"] == first
    assert capsys.readouterr().out == f"webhook secret: read from {tmp_path}/state/webhook-secret\n"
