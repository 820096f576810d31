"""Push-to-live: from the webhook POST to Traefik serving the new commit, against the floor.

Nephelios (receiver + one worker) deploys a small static app on each push. The floor does the
same steps as a plain script with no queue, no records and no checks: a fresh shallow clone,
`docker build` of the same generated Dockerfile, `docker stack deploy` of the same stack file,
then polling Traefik until the new page is served. Both are warmed up with one untimed push
(the service exists afterwards, as for any real redeploy) and then timed alternately.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import DOMAIN, EDGE_NETWORK, EDGE_PORT, Rig, Row, edge, fmt_s, page, rig, wait_for
from pipeline.core.config import parse_config
from pipeline.core.deployment import Deployment
from pipeline.core.render import render_dockerfile, render_stack

PUSHES = 5
APP = "benchlive"
FLOOR = "benchfloor"
LIVE_TIMEOUT_S = 180


def nephelios_push(the_rig: Rig, label: str) -> tuple[float, float]:
    """Seconds until Traefik serves the push, and until its rollout is confirmed."""
    started = time.monotonic()
    _, deployment_id = the_rig.push(APP, page(label), f"push {label}")
    wait_for(lambda: the_rig.served(APP, label), LIVE_TIMEOUT_S, f"{APP} to serve {label}")
    served = time.monotonic() - started
    # Wait for the confirmation too, so the next push never queues behind this one.
    record = wait_for(lambda: _finished(the_rig, deployment_id), LIVE_TIMEOUT_S, "the record")
    if record.status != "succeeded":
        raise RuntimeError(f"{APP} {label}: {record.status}: {record.error}")
    return served, time.monotonic() - started


def _finished(the_rig: Rig, deployment_id: str) -> Deployment | None:
    record = the_rig.store.get(deployment_id)
    return record if record is not None and record.finished else None


class Floor:
    """The same steps as a plain script would do them."""

    def __init__(self, the_rig: Rig, workdir: Path) -> None:
        self.rig = the_rig
        self.workdir = workdir
        config = parse_config(
            {
                "platform": {
                    "domain": DOMAIN,
                    "edge_network": EDGE_NETWORK,
                    "http_port": EDGE_PORT,
                },
                "apps": {FLOOR: {"repo": f"bench/{FLOOR}", "port": 8080}},
            }
        )
        self.platform = config.platform
        self.app = config.apps[FLOOR]

    def push(self, label: str) -> float:
        commit = self.rig.repos[FLOOR].commit(page(label), f"push {label}")
        started = time.monotonic()
        checkout = self.workdir / commit
        bare = str(self.rig.repos[FLOOR].bare)
        call("git", "clone", "--quiet", "--depth", "1", f"file://{bare}", str(checkout))
        (checkout / "Dockerfile").write_text(render_dockerfile(self.app, self.platform))
        tag = f"{FLOOR}:{commit[:12]}"
        labels = {"nephelios.app": FLOOR}
        call(
            "docker",
            "build",
            "--quiet",
            "--label",
            f"nephelios.app={FLOOR}",
            "-t",
            tag,
            str(checkout),
        )
        stack = self.workdir / f"{commit}.yml"
        stack.write_text(render_stack(self.app, self.platform, tag, 1, labels))
        call("docker", "stack", "deploy", "--detach=true", "-c", str(stack), FLOOR)
        wait_for(lambda: self.rig.served(FLOOR, label), LIVE_TIMEOUT_S, f"{FLOOR} to serve {label}")
        return time.monotonic() - started


def call(*command: str) -> None:
    # The legacy builder: docker.io from Debian ships no buildx plugin.
    env = {"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    subprocess.run(command, check=True, capture_output=True, env=env)


def run_bench() -> tuple[list[float], list[float], list[float]]:
    with tempfile.TemporaryDirectory(prefix="nephelios-bench-") as tmp, edge():
        workdir = Path(tmp)
        with rig(workdir, {APP: {}, FLOOR: {}}, workers=1) as the_rig:
            floor = Floor(the_rig, workdir)
            nephelios_push(the_rig, "warm-up")
            floor.push("warm-up")
            ours, confirmed, theirs = [], [], []
            for number in range(PUSHES):
                served, done = nephelios_push(the_rig, f"v{number}")
                ours.append(served)
                confirmed.append(done)
                theirs.append(floor.push(f"v{number}"))
    return ours, confirmed, theirs


def run() -> list[Row]:
    ours, confirmed, theirs = run_bench()
    ours_median, floor_median = statistics.median(ours), statistics.median(theirs)
    over = ours_median - floor_median
    return [
        Row(
            "push-to-live",
            f"median of {PUSHES} pushes (min-max)",
            f"{fmt_s(ours_median)} ({min(ours):.2f}-{max(ours):.2f})",
            f"{fmt_s(floor_median)} ({min(theirs):.2f}-{max(theirs):.2f})",
            f"+{over:.2f} s" if over >= 0 else f"{over:.2f} s",
            "<= floor + 1 s",
            "yes" if over <= 1 else f"no (+{over - 1:.2f} s beyond)",
        ),
        Row(
            "push-to-live",
            "median push to rollout confirmed (Swarm's monitor period included)",
            fmt_s(statistics.median(confirmed)),
        ),
    ]
