"""Rollout under load: ~50 requests/s through Traefik while the app is redeployed 5 times.

A load thread sends one request every 20 ms, each on a new connection, to the app's host
through the bench Traefik, and counts every answer that is not 2xx and every connection
error. Meanwhile five pushes are deployed one after the other, each waited for until served.
Target: no failed request.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from bench.common import DOMAIN, Row, edge, fetch, page, rig, wait_for

APP = "benchroll"
REDEPLOYS = 5
INTERVAL_S = 0.02
LIVE_TIMEOUT_S = 180


class Load(threading.Thread):
    def __init__(self, host: str) -> None:
        super().__init__(daemon=True)
        self.host = host
        self.stopping = threading.Event()
        self.sent = 0
        self.failures: dict[str, int] = {}

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            status, _ = fetch(self.host, timeout_s=5)
            self.sent += 1
            if not 200 <= status < 300:
                key = "connection error" if status == 0 else str(status)
                self.failures[key] = self.failures.get(key, 0) + 1
            next_at += INTERVAL_S
            self.stopping.wait(max(0.0, next_at - time.monotonic()))


def run() -> list[Row]:
    with (
        tempfile.TemporaryDirectory(prefix="nephelios-bench-") as tmp,
        edge(),
        rig(Path(tmp), {APP: {}}, workers=1) as the_rig,
    ):
        the_rig.push(APP, page("v0"))
        wait_for(lambda: the_rig.served(APP, "v0"), LIVE_TIMEOUT_S, "the first version")
        load = Load(f"{APP}.{DOMAIN}")
        started = time.monotonic()
        load.start()
        for number in range(1, REDEPLOYS + 1):
            label = f"v{number}"
            the_rig.push(APP, page(label), label)
            wait_for(lambda: the_rig.served(APP, label), LIVE_TIMEOUT_S, label)  # noqa: B023
        load.stopping.set()
        load.join()
        elapsed = time.monotonic() - started
    failed = sum(load.failures.values())
    detail = ", ".join(f"{n} x {kind}" for kind, n in load.failures.items()) or "none"
    return [
        Row(
            "rollout",
            f"failed requests during {REDEPLOYS} redeploys",
            str(failed),
            "",
            "",
            "0",
            "yes" if failed == 0 else f"no ({failed} failed: {detail})",
        ),
        Row("rollout", "requests sent (rate)", f"{load.sent} ({load.sent / elapsed:.0f}/s)"),
    ]
