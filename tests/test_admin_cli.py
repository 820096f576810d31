"""The admin CLI against a real `nephelios serve` process: output, `--json`, exit statuses.

The receiver listens on 127.0.0.1 at NEPHELIOS_TEST_ADMIN_PORT, or a free port when unset.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import EDGE_NETWORK, EDGE_PORT, TEST_DOMAIN
from tests.support import GitRepo, wait_until
from tests.test_e2e import fetch
from webhooks.cli import main

TOKEN = "cli-test-token"


def free_port() -> int:
    fixed = os.environ.get("NEPHELIOS_TEST_ADMIN_PORT")
    return int(fixed) if fixed else unused_port()


def unused_port() -> int:
    """A port nothing listens on (the OS's pick; not the fixed admin port, which is in use)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1):  # noqa: S310 - loopback
            return True
    except OSError:
        return False


@pytest.fixture
def serve(
    worker: subprocess.Popen[bytes], worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A `nephelios serve` sharing a worker's config, queue and state; yields its URL."""
    port = free_port()
    platform = {"domain": TEST_DOMAIN, "edge_network": EDGE_NETWORK, "http_port": EDGE_PORT}
    config = {"platform": platform, "apps": {"declared": {"repo": "acme/d"}}}
    Path(worker_env["NEPHELIOS_CONFIG"]).write_text(yaml.safe_dump(config))
    env = {**worker_env, "NEPHELIOS_PORT": str(port), "NEPHELIOS_ADMIN_TOKEN": TOKEN}
    env["NEPHELIOS_WEBHOOK_SECRET"] = "admin-cli-test"  # serve refuses to start without one
    process = subprocess.Popen(
        [sys.executable, "-m", "webhooks.cli", "serve", "--host", "127.0.0.1"], env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: healthy(url), 30, "nephelios serve to answer")
        monkeypatch.setenv("NEPHELIOS_URL", url)
        monkeypatch.setenv("NEPHELIOS_ADMIN_TOKEN", TOKEN)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.redis
def test_exit_statuses_and_json(serve: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apps", "--json"]) == 0
    apps = json.loads(capsys.readouterr().out)
    assert [app["app_name"] for app in apps] == ["declared"]

    assert main(["apps"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == [
        "NAME", "SOURCE", "TYPE", "COMMIT", "REPLICAS", "URL"
    ]  # fmt: skip

    assert main(["scale", "nope", "1"]) == 1
    assert capsys.readouterr().err.strip() == "nephelios: 404: no app named 'nope'"
    assert main(["logs", "feedface"]) == 1
    assert "404: no deployment" in capsys.readouterr().err

    os.environ["NEPHELIOS_ADMIN_TOKEN"] = "wrong"  # monkeypatch restores it
    assert main(["apps"]) == 1
    assert "401: wrong admin token" in capsys.readouterr().err

    assert main(["apps", "--url", f"http://127.0.0.1:{unused_port()}"]) == 3
    assert "cannot reach" in capsys.readouterr().err


@pytest.mark.docker
def test_create_follow_table_and_remove(
    tmp_path: Path,
    edge: int,
    serve: str,
    cleanup_stack: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = cleanup_stack
    repo = GitRepo(tmp_path / "github")
    repo.commit({"index.html": "<h1>cli</h1>\n"})
    status = main(["create", app, str(repo.bare), "--port", "8080", "--follow"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "building" in out and "succeeded" in out
    assert "  | fetching" in out  # the build log, followed live

    wait_until(lambda: "<h1>cli</h1>" in fetch(edge, f"{app}.{TEST_DOMAIN}"), 60, "the app")
    assert main(["apps"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(app))
    assert row.split()[1:3] == ["api", "static"] and "1/1" in row

    assert main(["remove", app]) == 0
    assert capsys.readouterr().out.strip() == f"{app}: removed (1 images)"
    assert main(["apps", app]) == 1
