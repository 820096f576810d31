"""Fan-out: 20 apps pushed at once, with 1, 2 and 4 workers.

Per worker count: the time from the first delivery until every app's deployment finished,
the sum of the build phases (building -> deploying, from the records) divided by the worker
count as the ideal, and the peak resident memory of the receiver and of one worker (the
worker's own process plus the work horse RQ forks for each job). Targets: total time close
to build time / workers; receiver under 100 MB.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import Rig, Row, fmt_s, page, rig, rss_tree_kib, wait_for
from pipeline.core.deployment import BUILDING, DEPLOYING, Deployment

APPS = 20
WORKER_COUNTS = (1, 2, 4)
DONE_TIMEOUT_S = 900


class Peak(threading.Thread):
    """Samples the resident memory of some process trees every 100 ms; keeps the maximum."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = {name: 0 for name in pids}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            for name, pids in self.pids.items():
                for pid in pids:
                    self.peak[name] = max(self.peak[name], rss_tree_kib(pid))


def build_seconds(record: Deployment) -> float:
    times = {h["status"]: h["at"] for h in record.history}
    if BUILDING in times and DEPLOYING in times:
        return float(times[DEPLOYING] - times[BUILDING])
    return 0.0


def one_round(the_rig: Rig, names: list[str], round_label: str) -> tuple[float, float]:
    started = time.monotonic()
    ids = [the_rig.push(name, page(f"{name} {round_label}"))[1] for name in names]
    records = wait_for(lambda: _all_finished(the_rig, ids), DONE_TIMEOUT_S, "all 20 deploys")
    total = time.monotonic() - started
    failed = [r for r in records if r.status != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} deploys did not succeed: {failed[0].error}")
    return total, sum(build_seconds(r) for r in records)


def _all_finished(the_rig: Rig, ids: list[str]) -> list[Deployment] | None:
    records = [the_rig.store.get(i) for i in ids]
    if all(r is not None and r.finished for r in records):
        return [r for r in records if r is not None]
    return None


def run() -> list[Row]:
    names = [f"benchfan{n:02d}" for n in range(APPS)]
    rows = []
    for workers in WORKER_COUNTS:
        apps: dict[str, dict[str, Any]] = {name: {} for name in names}
        with (
            tempfile.TemporaryDirectory(prefix="nephelios-bench-") as tmp,
            rig(Path(tmp), apps, workers=workers) as the_rig,
        ):
            pids = {"receiver": [the_rig.receiver.pid]}
            pids["worker"] = [p.pid for p in the_rig.worker_processes]
            peak = Peak(pids)
            peak.start()
            total, building = one_round(the_rig, names, f"{workers} workers")
            peak.stopping.set()
            peak.join()
        ideal = building / workers
        rows.append(
            Row(
                "fanout",
                f"{APPS} apps, {workers} worker(s): total (ideal build/workers)",
                f"{fmt_s(total)} ({fmt_s(ideal)})",
                "",
                f"{total / ideal:.1f}x" if ideal else "",
                "close to ideal",
                "",
            )
        )
        receiver_mb = peak.peak["receiver"] / 1024
        worker_mb = peak.peak["worker"] / 1024
        rows.append(
            Row(
                "fanout",
                f"{workers} worker(s): peak RSS receiver / per worker",
                f"{receiver_mb:.0f} MB / {worker_mb:.0f} MB",
                "",
                "",
                "receiver < 100 MB",
                "yes" if receiver_mb < 100 else f"no (+{receiver_mb - 100:.0f} MB)",
            )
        )
    return rows
