"""The feeder: one thread per worker process that takes fresh deliveries from the feed
(`services.enqueue.FEED_KEY`, a Redis list the web appends to) and dispatches them in this
process, without a Celery hop (issue 15; the feed's design is in `services.enqueue`)."""

from __future__ import annotations

import logging
import threading

import redis
from django.db import InterfaceError, OperationalError, close_old_connections

from webhooks_project import tracing
from webhooks_project.process_local import ProcessLocal

from .services.dispatch import deliveries_dispatch
from .services.enqueue import FEED_KEY, FEED_WAIT, deliveries_enqueue, feed_client, feed_message

logger = logging.getLogger(__name__)


class Feeder:
    """One thread that takes messages from the feed and dispatches them in this process."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-feed", daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self, timeout: float = FEED_WAIT + 1) -> None:
        """Take no more messages; waits for the one being dispatched (bounded)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        client = feed_client()
        failures = 0
        while not self._stop.is_set():
            try:
                item = client.blpop([FEED_KEY], timeout=FEED_WAIT)
                failures = 0
            except (redis.RedisError, OSError) as exc:
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    logger.warning("feed: broker unavailable (%d tries): %s", failures, exc)
                self._stop.wait(min(5.0, 0.2 * failures))
                continue
            if item is not None:
                self.handle(item[1])
        client.close()
        close_old_connections()

    def handle(self, raw: bytes | str) -> None:
        """Dispatch one message's deliveries here, in the trace of its publisher if it names
        one; never raises (a bug must not stop the feed: the rows stay for the sweeper)."""
        try:
            ids, traceparent = feed_message(raw)
        except ValueError:
            logger.error("feed: dropped a malformed message %r", raw[:200])
            return
        try:
            with tracing.continued(traceparent):
                deliveries_dispatch(delivery_ids=ids)
        except (OperationalError, InterfaceError) as exc:
            # our database is away: hand them to Celery's retry path (it backs off)
            logger.warning("database unavailable for %d fed deliveries: %s", len(ids), exc)
            close_old_connections()
            deliveries_enqueue(delivery_ids=ids, countdown=1)
        except Exception:
            logger.exception("feed: dispatching %d deliveries failed", len(ids))


_feeders = ProcessLocal(Feeder)


def feeder_start() -> Feeder:
    """Start this process's feeder (once per process)."""
    feeder = _feeders.get()
    if not feeder._thread.is_alive() and not feeder._stop.is_set():
        feeder.start()
    return feeder


def feeder_stop() -> None:
    feeder = _feeders.current()
    if feeder is not None:
        feeder.stop()
