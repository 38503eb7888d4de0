"""Retention, row by row: what outlived its day partition (services.partitions) once it is done.

Whole days go by dropping their partitions; this deletes the events that were kept then because
a delivery was still owed, and anything else that sits in a default partition, once every
delivery of the event has succeeded before the cutoff. It only ever meets a few rows.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from deliveries.models import DeadLetter, Delivery, DeliveryAttempt, Event, IdempotencyKey

logger = logging.getLogger(__name__)


def events_prune(*, batch_size: int = 1000, max_batches: int = 100) -> int:
    """Beat job: delete events older than WEBHOOKS_RETENTION_DAYS whose every delivery succeeded
    before then, with those deliveries, their attempts and any replayed dead letters.

    Events with a delivery that failed, died or is still going are kept whole (they are in the
    dead-letter queue or still owed). Works in batches of `batch_size` events, each in its own
    transaction, taking rows with SKIP LOCKED. Returns how many events were deleted.
    """
    cutoff = timezone.now() - timedelta(days=settings.WEBHOOKS_RETENTION_DAYS)
    unfinished = Delivery.objects.filter(event_id=OuterRef("pk")).exclude(
        status=Delivery.Status.SUCCEEDED, completed_at__lt=cutoff
    )
    deleted = 0
    for _ in range(max_batches):
        with transaction.atomic():
            event_ids = list(
                Event.objects.select_for_update(skip_locked=True)
                .filter(created_at__lt=cutoff)
                .exclude(Exists(unfinished))
                .order_by("created_at")
                .values_list("id", flat=True)[:batch_size]
            )
            if event_ids:
                with connection.cursor() as cursor:
                    for table, column in (
                        (DeliveryAttempt._meta.db_table, "delivery_id"),
                        (DeadLetter._meta.db_table, "delivery_id"),
                    ):
                        cursor.execute(
                            f"DELETE FROM {table} WHERE {column} IN "  # noqa: S608 - our names
                            f"(SELECT id FROM {Delivery._meta.db_table} WHERE event_id = ANY(%s))",
                            [event_ids],
                        )
                    cursor.execute(
                        f"DELETE FROM {Delivery._meta.db_table} WHERE event_id = ANY(%s)",  # noqa: S608
                        [event_ids],
                    )
                    for table, column in (
                        (IdempotencyKey._meta.db_table, "event_id"),
                        (Event._meta.db_table, "id"),
                    ):
                        cursor.execute(
                            f"DELETE FROM {table} WHERE {column} = ANY(%s)",  # noqa: S608
                            [event_ids],
                        )
        deleted += len(event_ids)
        if len(event_ids) < batch_size:
            break
    if deleted:
        logger.info(
            "pruned %d events older than %d days", deleted, settings.WEBHOOKS_RETENTION_DAYS
        )
    return deleted
