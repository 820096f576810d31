"""The Redis that `nephelios up` runs itself when nothing answers at REDIS_URL.

Only for a loopback URL (a Redis elsewhere that does not answer is an outage to report, not
something to replace). The server runs as a child process with append-only persistence in
`<state dir>/redis`, so deployments queued when `up` stops are still queued when it starts
again. Its configuration, password included, goes in on stdin (`redis-server -`), so nothing
secret appears in the process list or in what `up` prints.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import redis

from pipeline.errors import NepheliosError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 30.0


def shown(url: str) -> str:
    """REDIS_URL without its credentials, for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


def answers(connection: redis.Redis) -> bool:
    try:
        connection.ping()
    except redis.RedisError:
        return False
    return True


def config_text(url: str, directory: Path) -> str:
    """The redis.conf for an embedded server answering at `url`."""
    parts = urlsplit(url)
    lines = [
        f"port {parts.port or 6379}",
        "bind 127.0.0.1 -::1",
        f'dir "{directory}"',
        f'logfile "{directory / "redis.log"}"',
        "appendonly yes",
        "appendfsync everysec",
        'save ""',  # the append-only file is the persistence; no RDB snapshots on top
    ]
    if parts.password:
        # Quoted for redis.conf: escape what would end or break the string.
        password = parts.password.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'requirepass "{password}"')
    return "\n".join(lines) + "\n"


def start(
    url: str,
    state_dir: Path,
    connection: redis.Redis,
    preexec: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Start redis-server for `url`; refuse with the reason when that is not the right move.
    `preexec` runs in the child before exec (`up` uses it to tie Redis's life to its own)."""
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise NepheliosError(
            f"Redis does not answer at REDIS_URL ({shown(url)}); start it, or unset REDIS_URL "
            "to let `nephelios up` run one on this host"
        )
    binary = shutil.which("redis-server")
    if binary is None:
        raise NepheliosError(
            f"Redis does not answer at {shown(url)} and redis-server is not installed "
            "(apt-get install redis-server)"
        )
    directory = state_dir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    # Own session: a Ctrl-C in the terminal reaches `up` only, which stops Redis last, after
    # the workers have drained.
    process = subprocess.Popen(
        [binary, "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=preexec,
    )
    assert process.stdin is not None
    process.stdin.write(config_text(url, directory.resolve()).encode())
    process.stdin.close()
    _wait_until_ready(process, connection, directory)
    return process


def _wait_until_ready(
    process: subprocess.Popen[bytes], connection: redis.Redis, directory: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        # Loading a large append-only file answers LOADING errors until done.
        if answers(connection):
            return
        if process.poll() is not None:
            raise NepheliosError(
                f"the embedded redis-server exited with status {process.returncode}; "
                f"see {directory / 'redis.log'}"
            )
        time.sleep(0.1)
    stop(process)
    raise NepheliosError(f"the embedded redis-server did not answer within {START_TIMEOUT_S}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM: redis-server flushes the append-only file and exits."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
