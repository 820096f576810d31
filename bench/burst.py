"""Burst: 30 pushes to one app within 10 seconds.

Each push is a new commit on top of the last, delivered as GitHub would (one delivery per
push). Counted from the deployment records: how many builds started, how long until the last
commit is served through Traefik, and which commit is live at the end. Target: at most two
builds, the last commit live.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import Row, edge, fmt_s, page, rig, wait_for
from pipeline.core.deployment import BUILDING

PUSHES = 30
WINDOW_S = 10.0
APP = "benchburst"
LIVE_TIMEOUT_S = 300


def run() -> list[Row]:
    with (
        tempfile.TemporaryDirectory(prefix="nephelios-bench-") as tmp,
        edge(),
        rig(Path(tmp), {APP: {}}, workers=2) as the_rig,
    ):
        the_rig.push(APP, page("warm-up"))
        wait_for(lambda: the_rig.served(APP, "warm-up"), LIVE_TIMEOUT_S, "the warm-up")
        before = {d.id for d in the_rig.records(APP)}
        started = time.monotonic()
        label = ""
        for number in range(PUSHES):
            label = f"burst-{number}"
            the_rig.push(APP, page(label), label)
            pause = started + (number + 1) * WINDOW_S / PUSHES - time.monotonic()
            time.sleep(max(0.0, pause))  # paces the pushes; no race depends on it
        sent_s = time.monotonic() - started
        wait_for(lambda: the_rig.served(APP, label), LIVE_TIMEOUT_S, "the last push live")
        live_s = time.monotonic() - started
        records = [d for d in the_rig.records(APP) if d.id not in before]
        builds = sum(1 for d in records if any(h["status"] == BUILDING for h in d.history))
        statuses: dict[str, int] = {}
        for record in records:
            statuses[record.status] = statuses.get(record.status, 0) + 1
    summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    return [
        Row(
            "burst",
            f"builds for {PUSHES} pushes in {sent_s:.1f} s",
            str(builds),
            "",
            "",
            "<= 2",
            "yes" if builds <= 2 else f"no ({builds - 2} extra)",
        ),
        Row(
            "burst",
            "first push to last commit live",
            fmt_s(live_s),
            "",
            "",
            "last commit live",
            "yes",
        ),
        Row("burst", "final records", summary),
    ]
