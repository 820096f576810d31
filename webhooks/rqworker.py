"""The RQ worker class `nephelios worker` runs: RQ's own, with a bounded pub/sub shutdown.

RQ listens for commands on a pub/sub channel in a thread that waits `sleep_time` seconds per
poll (RQ passes 60). At shutdown RQ unsubscribes and stops that thread; since redis-py 8 the
stop joins the thread without a bound, and a thread that has already seen the unsubscribe
sits out its whole wait for a subscription that will not come. A warm shutdown then took up
to a minute after the last job ended. Polling every second bounds that to a second.
"""

from __future__ import annotations

from rq import Worker

from pipeline.worker import ReapingWorker

PUBSUB_POLL_S = 1.0


class DeployWorker(Worker):
    def subscribe(self) -> None:
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        # RQ declares the attribute as None-only; it holds the thread while subscribed.
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=PUBSUB_POLL_S, daemon=True, exception_handler=self._pubsub_exception_handler
        )


class NepheliosWorker(ReapingWorker, DeployWorker):
    """What `nephelios worker` runs: the bounded shutdown above plus the reaper of
    `pipeline.worker` (abandoned deployments failed, stuck apps kicked)."""
