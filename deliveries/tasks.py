"""Celery tasks: thin wrappers that take ids, call a service, and schedule the next run."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from .services import (
    deliveries_requeue_stuck,
    delivery_attempt_run,
    endpoints_disable_failing,
    events_prune,
)

logger = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, max_retries=None, ignore_result=True)
def deliver(self, delivery_id: int) -> str:  # type: ignore[no-untyped-def]
    """Attempt one delivery if it is due; schedule the next try when the policy says so.

    Only delays up to WEBHOOKS_COUNTDOWN_MAX ride on a Celery countdown. Longer ones are parked
    in the row (`next_attempt_at`) for the beat sweeper: with the Redis broker an ETA longer than
    the `visibility_timeout` is redelivered again and again (celery#2599, celery#3270, kombu#337).
    The database row stays the truth either way, so a lost countdown message only delays a retry.
    """
    try:
        run = delivery_attempt_run(delivery_id=delivery_id)
    except (OperationalError, InterfaceError) as exc:
        # Our own database is away: nothing is recorded against the consumer. Look again soon;
        # a claimed row keeps its lease and the sweeper takes it back if this never succeeds.
        logger.warning("database unavailable for delivery %s: %s", delivery_id, exc)
        delay = min(settings.WEBHOOKS_COUNTDOWN_MAX, 2 ** min(self.request.retries, 6))
        raise self.retry(countdown=delay) from exc
    if run.retry_in is not None and run.retry_in <= settings.WEBHOOKS_COUNTDOWN_MAX:
        raise self.retry(countdown=max(0.0, run.retry_in))
    return run.status


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
    """Beat job: delete fully delivered events older than WEBHOOKS_RETENTION_DAYS, in batches."""
    return events_prune()
