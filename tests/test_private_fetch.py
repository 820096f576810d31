"""Private repositories: fetching over smart HTTP with the GitHub token, which never leaks.

The server is `git http-backend` behind a small HTTP server of the test's own on 127.0.0.1,
refusing every request without the right Basic credentials, as GitHub does for a private
repository.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from pipeline import admin
from pipeline import git as gitops
from pipeline.errors import FetchError, Unprocessable
from tests.support import GitRepo, http_server, push_tag

TOKEN = "ghs_privateFetchToken0123456789"
BACKEND = "/usr/lib/git-core/git-http-backend"


def git_server(root: Path, token: str) -> Iterator[str]:
    """Serve the bare repositories under `root`; yields the base URL."""
    wanted = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.serve()

        def do_POST(self) -> None:
            self.serve()

        def serve(self) -> None:
            if self.headers.get("Authorization") != wanted:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="private"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            env = {
                "PATH": "/usr/bin:/bin",
                "GIT_PROJECT_ROOT": str(root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(length),
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "REMOTE_USER": "x-access-token",
            }
            body = self.rfile.read(length) if length else b""
            result = subprocess.run(
                [BACKEND], input=body, env=env, capture_output=True, check=False
            )
            head, _, payload = result.stdout.partition(b"\r\n\r\n")
            status = 200
            headers = []
            for line in head.decode().split("\r\n"):
                name, _, value = line.partition(": ")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_server(Handler) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def private_repo(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(clone URL, commit) of a repository that answers only with the token."""
    repo = GitRepo(tmp_path / "github")
    commit = repo.commit({"index.html": "<h1>private</h1>\n"})
    for base in git_server(tmp_path / "github", TOKEN):
        yield f"{base}/origin.git", commit


def test_a_private_repository_is_fetched_with_the_token(
    tmp_path: Path, private_repo: tuple[str, str]
) -> None:
    url, commit = private_repo
    cache = gitops.cache_repo(tmp_path / "cache", "app")
    gitops.fetch_commit(cache, url, commit, TOKEN)
    assert gitops.has_commit(cache, commit)
    # Nothing of the token is left in the cache repository.
    secret_forms = (TOKEN, base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode())
    for path in Path(cache.git_dir).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(form.encode() in data for form in secret_forms), path


def test_without_the_right_token_the_fetch_fails_without_showing_it(
    tmp_path: Path, private_repo: tuple[str, str]
) -> None:
    url, commit = private_repo
    cache = gitops.cache_repo(tmp_path / "cache", "app")
    with pytest.raises(FetchError) as no_token:
        gitops.fetch_commit(cache, url, commit, "")
    wrong = "ghs_wrongTokenWrongToken0000"
    with pytest.raises(FetchError) as wrong_token:
        gitops.fetch_commit(cache, url, commit, wrong)
    assert wrong not in str(wrong_token.value)
    assert wrong not in repr(wrong_token.value.__cause__)
    assert "terminal prompts disabled" in str(no_token.value)  # it fails, never hangs
    assert not gitops.has_commit(cache, commit)


def test_a_private_release_tag_is_resolved_with_the_token(
    tmp_path: Path, private_repo: tuple[str, str]
) -> None:
    url, commit = private_repo
    push_tag(GitRepo(tmp_path / "github"), "1.0.0", "a private release")
    assert gitops.tagged_commit(url, "refs/tags/1.0.0", TOKEN) == commit
    wrong = "ghs_wrongTokenWrongToken0000"
    with pytest.raises(FetchError) as refused:
        gitops.tagged_commit(url, "refs/tags/1.0.0", wrong)
    assert wrong not in str(refused.value)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback HTTP "server" that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/origin.git"
    finally:
        listener.close()


def test_a_remote_that_never_answers_fails_the_fetch_in_bounded_time(
    tmp_path: Path, silent_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gitops, "LS_REMOTE_TIMEOUT_S", 2)
    monkeypatch.setattr(gitops, "FETCH_TIMEOUT_S", 2)
    started = time.monotonic()
    with pytest.raises(FetchError):
        gitops.tagged_commit(silent_server, "refs/tags/1.0.0")
    with pytest.raises(FetchError):
        gitops.fetch_commit(gitops.cache_repo(tmp_path / "cache", "app"), silent_server, "a" * 40)
    assert time.monotonic() - started < 30  # not the job timeout (minutes)


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("https://github.com/acme/site.git", True),
        ("http://127.0.0.1:8080/origin.git", True),
        ("http://localhost/origin.git", True),
        ("http://git.example.com/origin.git", False),  # in clear over the network: never
        ("/srv/git/origin.git", False),
    ],
)
def test_the_token_goes_only_over_https_or_to_loopback(url: str, sent: bool) -> None:
    env = gitops.fetch_env(url, TOKEN)
    assert ("GIT_CONFIG_VALUE_0" in env) == sent


def test_the_admin_api_reads_a_private_branch_with_the_token(
    private_repo: tuple[str, str],
) -> None:
    url, commit = private_repo
    assert admin.resolve_ref(url, "main", TOKEN) == commit
    with pytest.raises(Unprocessable, match="cannot read the repository") as refused:
        admin.resolve_ref(url, "main", "ghs_wrongTokenWrongToken0000")
    assert "ghs_wrong" not in str(refused.value)
