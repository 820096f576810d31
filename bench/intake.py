"""Intake: signed push deliveries at 20 connections for 10 s, Nephelios against `webhook`.

Both receivers get the same ~1 KB signed bodies from `wrk` with the same concurrency, in the
same run. The baseline is Debian's `webhook` (Go) with an HMAC-SHA256 trigger rule and
`/bin/true` as its command. Every body carries its own commit and delivery id, so Nephelios
really enqueues each one (no duplicate short-cuts); afterwards the deployment records in
Redis are counted and must be at least the number of 2xx answers wrk saw.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from rq import Queue

from bench.common import BASELINE_PORT, RECEIVER_PORT, SECRET, Row, rig, wait_for
from tests.support import encode, push_payload, sign

CONNECTIONS = 20
THREADS = 2
DURATION_S = 10
# Enough distinct deliveries that no request repeats at any rate this machine reaches.
BODIES_PER_THREAD = 40_000
APP = "benchintake"

WRK_SCRIPT = r"""
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  local path, target = args[1] .. "." .. id, args[2]
  requests = {}
  for line in io.lines(path) do
    local delivery, signature, body = line:match("([^\t]*)\t([^\t]*)\t(.*)")
    requests[#requests + 1] = wrk.format("POST", target, {
      ["Content-Type"] = "application/json",
      ["User-Agent"] = "GitHub-Hookshot/bench",
      ["X-GitHub-Event"] = "push",
      ["X-GitHub-Delivery"] = delivery,
      ["X-Hub-Signature-256"] = signature,
    }, body)
  end
  index = 0
end
function request()
  index = index % #requests + 1
  return requests[index]
end
function done(summary, latency, requests)
  io.write("RESULT ", string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def write_bodies(directory: Path) -> Path:
    """Files of `delivery \t signature \t body` lines, one file per wrk thread."""
    prefix = directory / "bodies"
    for thread in range(THREADS):
        with open(f"{prefix}.{thread}", "w") as handle:
            for _ in range(BODIES_PER_THREAD):
                payload = push_payload(f"bench/{APP}", uuid.uuid4().hex + uuid.uuid4().hex[:8])
                payload["head_commit"]["message"] = "Bench push " + "x" * 300
                body = encode(payload)
                handle.write(f"{uuid.uuid4()}\t{sign(body, SECRET)}\t{body.decode()}\n")
    return prefix


def run_wrk(port: int, path: str, bodies: Path, script: Path) -> dict[str, Any]:
    result = subprocess.run(
        [
            "wrk",
            f"-t{THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{DURATION_S}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
            "--",
            str(bodies),
            path,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    figures: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    figures["ok"] = figures["requests"] - figures["status_errors"]
    return figures


def baseline(workdir: Path, bodies: Path, script: Path) -> dict[str, Any]:
    hooks = [
        {
            "id": "deploy",
            "execute-command": "/bin/true",
            "response-message": "queued",
            "trigger-rule": {
                "match": {
                    "type": "payload-hmac-sha256",
                    "secret": SECRET,
                    "parameter": {"source": "header", "name": "X-Hub-Signature-256"},
                }
            },
        }
    ]
    hooks_file = workdir / "hooks.json"
    hooks_file.write_text(json.dumps(hooks))
    command = ["webhook", "-hooks", str(hooks_file), "-ip", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "-port", str(BASELINE_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _listening(BASELINE_PORT), 10, "the webhook baseline")
        return run_wrk(BASELINE_PORT, "/hooks/deploy", bodies, script)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def run() -> list[Row]:
    if not shutil.which("wrk") or not shutil.which("webhook"):
        raise RuntimeError("intake needs Debian's wrk and webhook packages (apt-get install)")
    with tempfile.TemporaryDirectory(prefix="nephelios-bench-") as tmp:
        workdir = Path(tmp)
        bodies = write_bodies(workdir)
        script = workdir / "push.lua"
        script.write_text(WRK_SCRIPT)
        with rig(workdir, {APP: {}}, workers=0) as the_rig:
            ours = run_wrk(RECEIVER_PORT, "/webhooks/github", bodies, script)
            # No worker runs, so every enqueued job is still in the queue to be counted.
            enqueued = Queue(the_rig.queue, connection=the_rig.redis).count
        theirs = baseline(workdir, bodies, script)
    return rows(ours, theirs, enqueued)


def rows(ours: dict[str, Any], theirs: dict[str, Any], enqueued: int) -> list[Row]:
    ratio = ours["rps"] / theirs["rps"] if theirs["rps"] else float("nan")
    p99_ms = ours["p99_us"] / 1000
    return [
        Row(
            "intake",
            "requests/s (20 conns, 10 s)",
            f"{ours['rps']:.0f}",
            f"{theirs['rps']:.0f}",
            f"{ratio:.2f}x",
            ">= 1.00x",
            "yes" if ratio >= 1 else f"no ({(1 - ratio) * 100:.0f}% short)",
        ),
        Row(
            "intake",
            "p50 / p99 latency",
            f"{ours['p50_us'] / 1000:.1f} / {p99_ms:.1f} ms",
            f"{theirs['p50_us'] / 1000:.1f} / {theirs['p99_us'] / 1000:.1f} ms",
            "",
            "p99 < 20 ms",
            "yes" if p99_ms < 20 else f"no (+{p99_ms - 20:.1f} ms)",
        ),
        Row(
            "intake",
            "2xx answered / enqueued / errors",
            f"{ours['ok']} / {enqueued} / {ours['status_errors'] + ours['socket_errors']}",
            f"{theirs['ok']} / - / {theirs['status_errors'] + theirs['socket_errors']}",
            "",
            "every 2xx enqueued",
            "yes" if enqueued >= ours["ok"] else f"no ({ours['ok'] - enqueued} lost)",
        ),
    ]
