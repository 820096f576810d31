"""RQ's worker, tuned so that a dead worker is noticed quickly (`webhooks.rqworker` runs it).

RQ keeps a job's registry entry alive with heartbeats and moves a job whose heartbeats stopped
to its failed registry during "maintenance", by default every ten minutes. Nephelios also
runs `pipeline.queueing.reap` then, and while a worker watches a long job, so that a
deployment whose worker was killed is failed as abandoned, and its app freed, in well under
two minutes (lock TTL 30 s + reap interval 15 s + dequeue wait 20 s at worst).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import Worker

from pipeline import queueing
from pipeline.apps import load_full_config
from pipeline.core.config import App, Config
from pipeline.core.deployment import Deployment
from pipeline.errors import ConfigError
from pipeline.reporting import Reporter
from pipeline.settings import Settings

log = logging.getLogger(__name__)

REAP_EVERY_S = 15
# RQ waits on the queue for worker_ttl - 15 s between maintenance runs of an idle worker.
WORKER_TTL_S = 35
JOB_MONITORING_INTERVAL_S = 10


class ReapingWorker(Worker):
    def __init__(self, *args: Any, settings: Settings, config: Config, **kwargs: Any) -> None:
        kwargs.setdefault("worker_ttl", WORKER_TTL_S)
        kwargs.setdefault("job_monitoring_interval", JOB_MONITORING_INTERVAL_S)
        kwargs.setdefault("maintenance_interval", REAP_EVERY_S)
        super().__init__(*args, **kwargs)
        self.nephelios_settings = settings
        self.nephelios_config = config
        self.reporter = Reporter.from_settings(settings)
        self.reaped_at = 0.0

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        self.reap()

    def maintain_heartbeats(self, *args: Any, **kwargs: Any) -> None:
        super().maintain_heartbeats(*args, **kwargs)
        if time.monotonic() - self.reaped_at >= REAP_EVERY_S:
            self.reap()

    def reap(self) -> None:
        self.reaped_at = time.monotonic()
        try:
            queueing.reap(
                self.connection,
                self.nephelios_settings.queue_name,
                self._build_timeout_s,
                self._report,
            )
        except Exception:
            # A failed sweep must not stop the worker; the next one tries again.
            log.exception("reaping abandoned deployments failed")

    def _app(self, name: str) -> App | None:
        # Jobs read nephelios.yml afresh; so does the reaper, falling back to the start-up
        # copy when the file is being rewritten or broken.
        try:
            config = load_full_config(self.nephelios_settings)
        except ConfigError:
            config = self.nephelios_config
        return config.apps.get(name)

    def _build_timeout_s(self, app: str) -> int:
        found = self._app(app)
        return found.build_timeout_s if found is not None else 60

    def _report(self, deployment: Deployment) -> None:
        found = self._app(deployment.app)
        if found is not None:
            self.reporter.report(deployment, found.repo)
