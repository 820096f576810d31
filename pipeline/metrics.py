"""Prometheus metrics kept in Redis, so that every process counts into one place.

Receivers and workers are separate processes, often on separate hosts (see deploy/), so
in-process prometheus-client metrics would each see a fraction; its multiprocess mode needs a
directory shared by all of them, which a Swarm does not have. Redis is already shared by
every Nephelios process, so the writers below add to Redis hashes with HINCRBY, and
`RedisCollector` turns those hashes into metric families when `/metrics` is scraped. Any
receiver answers with the same, cluster-wide numbers.

Keys (under `nephelios:metrics:`): `deliveries` and `deployments` map a JSON list of label
values to a count; `phase:<name>` holds a histogram as non-cumulative bucket counts keyed by
upper bound, plus `sum` and `count`.

Recording is best effort: a Redis hiccup loses a sample and logs a warning, it never fails
a delivery or a deployment.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from rq import Queue, Worker

log = logging.getLogger(__name__)

PREFIX = "nephelios:metrics:"
DELIVERIES_KEY = f"{PREFIX}deliveries"
DEPLOYMENTS_KEY = f"{PREFIX}deployments"
PHASES = ("fetch", "build", "deploy", "rollout")
# Seconds; from a cached fetch to a slow image build.
BUCKETS_S = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, math.inf)


def _phase_key(phase: str) -> str:
    return f"{PREFIX}phase:{phase}"


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(value)


def _field(*labels: str) -> str:
    return json.dumps(labels)


# --- writers (receivers and workers) ------------------------------------------------------


def count_delivery(connection: redis.Redis, event: str, outcome: str) -> None:
    """One webhook delivery answered; `outcome` is queued, ignored, duplicate, refused..."""
    _incr(connection, DELIVERIES_KEY, _field(event, outcome))


def count_deployment(connection: redis.Redis, app: str, status: str) -> None:
    """One deployment reached its final status."""
    _incr(connection, DEPLOYMENTS_KEY, _field(app, status))


def observe_phase(connection: redis.Redis, phase: str, seconds: float) -> None:
    bucket = next(b for b in BUCKETS_S if seconds <= b)
    try:
        pipe = connection.pipeline()
        pipe.hincrby(_phase_key(phase), _bound(bucket), 1)
        pipe.hincrbyfloat(_phase_key(phase), "sum", seconds)
        pipe.hincrby(_phase_key(phase), "count", 1)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("metrics: lost a %s sample: %s", phase, exc)


@contextmanager
def phase(connection: redis.Redis, name: str, fields: Mapping[str, str]) -> Iterator[None]:
    """Time one phase of a deployment: log its start and end (with `fields` as structured
    extras: app, deployment, delivery) and add its duration to the phase histogram."""
    extra = dict(fields)
    log.info("%s started", name, extra=extra)
    started_at = time.monotonic()
    outcome = "failed"
    try:
        yield
        outcome = "done"
    finally:
        elapsed_s = time.monotonic() - started_at
        log.info("%s %s in %.2fs", name, outcome, elapsed_s, extra=extra)
        observe_phase(connection, name, elapsed_s)


def _incr(connection: redis.Redis, key: str, field: str) -> None:
    try:
        connection.hincrby(key, field, 1)
    except redis.RedisError as exc:
        log.warning("metrics: lost a sample of %s: %s", key, exc)


# --- reader (the receiver's /metrics) -----------------------------------------------------


class RedisCollector:
    """A prometheus-client collector that reads the shared counts at scrape time.

    Redis errors propagate, so that a scrape fails visibly instead of reporting zeros.
    """

    def __init__(self, connection: redis.Redis, queue_name: str) -> None:
        self.connection = connection
        self.queue_name = queue_name

    def collect(self) -> Iterable[Metric]:
        yield self._counter(
            "nephelios_deliveries",
            "GitHub webhook deliveries answered, by event and outcome.",
            ["event", "outcome"],
            DELIVERIES_KEY,
        )
        yield self._counter(
            "nephelios_deployments",
            "Deployments that reached a final status, by app and status.",
            ["app", "status"],
            DEPLOYMENTS_KEY,
        )
        yield self._phases()
        yield from self._queue()

    def _counter(self, name: str, text: str, labels: list[str], key: str) -> Metric:
        family = CounterMetricFamily(name, text, labels=labels)
        for field, value in sorted(self.connection.hgetall(key).items()):
            family.add_metric(json.loads(field), float(value))
        return family

    def _phases(self) -> Metric:
        family = HistogramMetricFamily(
            "nephelios_phase_duration_seconds",
            "Time spent in each deployment phase.",
            labels=["phase"],
        )
        for name in PHASES:
            raw = {_text(k): float(v) for k, v in self.connection.hgetall(_phase_key(name)).items()}
            cumulative = 0.0
            buckets = []
            for bound in BUCKETS_S:
                cumulative += raw.get(_bound(bound), 0.0)
                buckets.append((_bound(bound), cumulative))
            family.add_metric([name], buckets, raw.get("sum", 0.0))
        return family

    def _queue(self) -> Iterator[Metric]:
        queue = Queue(self.queue_name, connection=self.connection)
        depth = GaugeMetricFamily("nephelios_queue_depth", "Deployments waiting for a worker.")
        depth.add_metric([], float(queue.count))
        yield depth
        workers = Worker.all(connection=self.connection, queue=queue)
        busy = sum(1 for worker in workers if worker.get_state() == "busy")
        gauge = GaugeMetricFamily(
            "nephelios_workers", "Deploy workers, by state.", labels=["state"]
        )
        gauge.add_metric(["busy"], float(busy))
        gauge.add_metric(["idle"], float(len(workers) - busy))
        yield gauge


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
