"""Celery tasks: thin wrappers that take ids, call a service, and schedule the next run."""

from __future__ import annotations

import logging

from celery import current_app, shared_task
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready
from django.conf import settings
from django.db import InterfaceError, OperationalError

from webhooks_project import tracing

from .feeder import feeder_start, feeder_stop
from .metrics import stats_prune
from .services.dispatch import current_sender, deliveries_dispatch
from .services.endpoints import endpoints_disable_failing
from .services.enqueue import DELIVER_BATCH, FRESH_QUEUE
from .services.ordering import keys_prune
from .services.partitions import partitions_ensure, partitions_expire
from .services.payloads import payloads_expire
from .services.retention import events_prune
from .services.sweeper import deliveries_requeue_stuck

logger = logging.getLogger(__name__)


@shared_task(name=DELIVER_BATCH, bind=True, acks_late=True, max_retries=None, ignore_result=True)
def deliver_batch(self, delivery_ids: list[int]) -> int:
    """Claim the due deliveries among `delivery_ids` and hand them to this process's sender.

    The task returns once they are handed over; the sender records each attempt as it ends and
    publishes short retries with a countdown. Only delays up to WEBHOOKS_COUNTDOWN_MAX ride on a
    Celery countdown. Longer ones are parked in the row (`next_attempt_at`) for the beat
    sweeper: with the Redis broker an ETA longer than the `visibility_timeout` is redelivered
    again and again (celery#2599, celery#3270, kombu#337). The database row stays the truth
    either way, so a lost message only delays a delivery.
    """
    try:
        return deliveries_dispatch(delivery_ids=delivery_ids)
    except (OperationalError, InterfaceError) as exc:
        # Our own database is away: nothing is recorded against the consumer. Look again soon;
        # a claimed row keeps its lease and the sweeper takes it back if this never succeeds.
        logger.warning("database unavailable for %d deliveries: %s", len(delivery_ids), exc)
        delay = min(settings.WEBHOOKS_COUNTDOWN_MAX, 2 ** min(self.request.retries, 6))
        raise self.retry(countdown=delay) from exc


@shared_task(acks_late=True, ignore_result=True)
def requeue_stuck() -> dict[str, int]:
    """Beat job: take back expired leases and publish due rows that have no live message."""
    return deliveries_requeue_stuck()


@shared_task(acks_late=True, ignore_result=True)
def disable_failing_endpoints() -> list[str]:
    """Beat job: disable endpoints whose every attempt failed for WEBHOOKS_DISABLE_AFTER."""
    return endpoints_disable_failing()


@shared_task(acks_late=True, ignore_result=True)
def prune() -> int:
    """Beat job: make the coming days' partitions, drop the days past WEBHOOKS_RETENTION_DAYS
    (keeping what is still owed), delete the rows kept that way once they are done, clear the
    payloads past WEBHOOKS_PAYLOAD_RETENTION_DAYS, and drop the metrics buckets older than
    WEBHOOKS_METRICS_RETENTION_DAYS, and forget ordering keys idle past the retention.
    Returns the events removed."""
    partitions_ensure()
    dropped = partitions_expire()
    deleted = dropped["events_dropped"] + events_prune()
    payloads_expire()
    stats_prune()
    keys_prune()
    return deleted


def _feeds() -> bool:
    """Whether this worker takes fresh work: it consumes the fresh queue, and the feed is on."""
    return settings.WEBHOOKS_DIRECT_FEED and FRESH_QUEUE in current_app.amqp.queues.consume_from


@worker_process_init.connect
def _start_feeder(**_: object) -> None:
    """Each prefork child takes fresh deliveries from the feed (services.enqueue)."""
    if _feeds():
        feeder_start()


@worker_ready.connect
def _start_feeder_in_pool(sender: object = None, **_: object) -> None:
    """With the solo or threads pool the tasks run in the main process: its feeder runs there."""
    pool = getattr(sender, "pool", None)
    if pool is not None and type(pool).__module__ != "celery.concurrency.prefork" and _feeds():
        feeder_start()


@worker_process_shutdown.connect
def _drain_sender(**_: object) -> None:
    """On a warm shutdown, take nothing more from the feed, and let requests already sent
    finish and be recorded (bounded wait)."""
    feeder_stop()
    sender = current_sender()
    if sender is not None and not sender.drain(timeout=settings.WEBHOOKS_HTTP_TIMEOUT + 5):
        logger.warning("shutdown with deliveries still in flight; their leases will expire")
    tracing.flush()  # the spans still buffered (a prefork child exits without atexit)
