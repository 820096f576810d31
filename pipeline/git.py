"""Fetching exactly the pushed commit, and turning its tree into a build context.

Each app keeps a bare cache repository under the state directory, so later fetches only
bring new objects. Commit ids are checked to be 40 hex characters before they reach git, and
git is always called with argument lists (GitPython), never a shell.

A GitHub token, when given, reaches git only through the environment of the fetch (as an
`http.<url>.extraHeader` in GIT_CONFIG_* variables, scoped to the app's own HTTPS URL): never
in a URL, a remote, a config file or an argument, so neither `ps`, the cache repository nor
git's error messages can show it.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import logging
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import git

from pipeline.core.github import SHA_RE
from pipeline.errors import FetchError

log = logging.getLogger(__name__)

# A remote that accepts and never answers must not hold a worker for the whole job timeout:
# git itself gives up on a stalled HTTP transfer, and GitPython kills it after these bounds.
FETCH_TIMEOUT_S = 600
LS_REMOTE_TIMEOUT_S = 60
STALLED_AFTER_S = 30


def cache_repo(cache_dir: Path, app: str) -> git.Repo:
    path = cache_dir / f"{app}.git"
    if path.exists():
        return git.Repo(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return git.Repo.init(path, bare=True)


def fetch_commit(repo: git.Repo, url: str, commit: str, token: str = "") -> None:
    """Make `commit` present in `repo`, fetching it by id from `url` when missing."""
    if not SHA_RE.match(commit):
        raise FetchError(f"not a commit id: {commit!r}")
    if url.startswith("-"):
        raise FetchError("refusing a repository URL that starts with '-'")
    if has_commit(repo, commit):
        return
    try:
        repo.git.fetch(
            "--no-tags",
            "--quiet",
            url,
            commit,
            env=fetch_env(url, token),
            kill_after_timeout=FETCH_TIMEOUT_S,
        )
    except git.GitCommandError as exc:
        raise _failed(f"git fetch of {commit[:12]}", exc, token) from exc
    if not has_commit(repo, commit):
        raise FetchError(f"commit {commit[:12]} is not in the repository")


def tagged_commit(url: str, ref: str, token: str = "") -> str:
    """The commit the tag `ref` (refs/tags/<tag>) points at, asked of the remote repository.

    An annotated tag is peeled: its `^{}` line names the commit, not the tag object.
    """
    if not ref.startswith("refs/tags/") or ref.startswith("refs/tags/-"):
        raise FetchError(f"refusing to resolve {ref!r}")
    try:
        found = remote_refs(url, [ref, f"{ref}^{{}}"], token)
    except FetchError as exc:
        raise FetchError(f"git ls-remote of {ref} failed: {exc}") from exc
    commit = found.get(f"{ref}^{{}}") or found.get(ref)
    if commit is None or not SHA_RE.match(commit):
        raise FetchError(f"{ref} is not in the repository")
    return commit


def remote_refs(url: str, patterns: Sequence[str], token: str = "") -> dict[str, str]:
    """Ref name -> object id of the refs matching `patterns` at `url` (`git ls-remote`).

    A failure is a FetchError whose message is git's reason, the token masked.
    """
    if url.startswith("-"):
        raise FetchError("refusing a repository URL that starts with '-'")
    try:
        listing = git.cmd.Git().ls_remote(
            "--", url, *patterns, env=fetch_env(url, token), kill_after_timeout=LS_REMOTE_TIMEOUT_S
        )
    except git.GitCommandError as exc:
        raise FetchError(git_reason(exc, token)) from exc
    refs: dict[str, str] = {}
    for line in str(listing).splitlines():
        sha, _, name = line.partition("\t")
        refs[name.strip()] = sha.strip()
    return refs


def fetch_env(url: str, token: str) -> dict[str, str]:
    """Environment for a fetch: never prompt; send the token only to this URL, over HTTPS
    (plain HTTP only to this host's loopback, where a test or a local mirror listens)."""
    env = {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        # Below 1 KB/s for this long, an HTTP fetch is abandoned rather than left hanging.
        "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
        "GIT_HTTP_LOW_SPEED_TIME": str(STALLED_AFTER_S),
    }
    if token and (url.startswith("https://") or _loopback_http(url)):
        # GitHub takes a token as the password of HTTP Basic auth, any user name.
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"http.{url}.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        )
    return env


def _loopback_http(url: str) -> bool:
    if not url.startswith("http://"):
        return False
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_ancestor(repo: git.Repo, older: str, newer: str) -> bool:
    """True when `older` is `newer` or one of its ancestors (both must be present)."""
    try:
        repo.git.merge_base("--is-ancestor", older, newer)
    except git.GitCommandError as exc:
        if exc.status == 1:
            return False
        raise FetchError(f"cannot compare {older[:12]} with {newer[:12]}") from exc
    return True


def has_commit(repo: git.Repo, commit: str) -> bool:
    try:
        repo.git.cat_file("-e", f"{commit}^{{commit}}")
    except git.GitCommandError:
        return False
    return True


def has_file(repo: git.Repo, commit: str, path: str) -> bool:
    try:
        repo.git.cat_file("-e", f"{commit}:{path}")
    except git.GitCommandError:
        return False
    return True


def build_context(
    repo: git.Repo, commit: str, extra: dict[str, str], subdir: str = "."
) -> IO[bytes]:
    """A tar of the commit's tree (no .git), plus `extra` files such as a generated Dockerfile.

    `subdir` (a validated relative path) makes a directory of the commit the context, for
    monorepos that build several images.
    """
    buffer = io.BytesIO()
    tree = commit if subdir == "." else f"{commit}:{subdir}"
    repo.git.archive("--format=tar", tree, output_stream=buffer)
    buffer.seek(0, io.SEEK_END)
    with tarfile.open(fileobj=_rewind(buffer), mode="a") as tar:
        for name, text in extra.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return _rewind(buffer)


def _rewind(buffer: io.BytesIO) -> io.BytesIO:
    buffer.seek(0)
    return buffer


def _failed(what: str, exc: git.GitCommandError, token: str) -> FetchError:
    return FetchError(f"{what} failed: {git_reason(exc, token)}")


def git_reason(exc: git.GitCommandError, token: str = "") -> str:
    """Git's first `fatal:` line (what follows it is advice that reads as a broken sentence),
    with the token, if any, masked."""
    lines = [line.strip(" '") for line in str(exc.stderr or "").splitlines()]
    lines = [line.removeprefix("stderr: ").strip(" '") for line in lines if line.strip(" '")]
    fatal = [line.removeprefix("fatal: ") for line in lines if line.startswith("fatal: ")]
    reason = (fatal or lines or [f"git exited with {exc.status}"])[0]
    return reason.replace(token, "***") if token else reason
