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
from django.utils import timezone

from deliveries.models import DeadLetter, Delivery, DeliveryAttempt, Event, IdempotencyKey

logger = logging.getLogger(__name__)

_DONE_SQL = f"""
SELECT e.id FROM {Event._meta.db_table}_default AS e
 WHERE e.created_at < %(cutoff)s
   AND NOT EXISTS (SELECT 1 FROM {Delivery._meta.db_table} AS d
                    WHERE d.event_id = e.id
                      AND NOT (d.status = 'succeeded' AND d.completed_at < %(cutoff)s))
 ORDER BY e.created_at
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED
"""  # noqa: S608 - our table names


def events_prune(*, batch_size: int = 1000, max_batches: int = 100) -> int:
    """Beat job: delete the events of the default partition older than WEBHOOKS_RETENTION_DAYS
    whose every delivery succeeded before then, with those deliveries, their attempts, their
    idempotency keys and any replayed dead letters.

    Only the default partition: every other day goes whole, by `partitions_expire`, and its
    rows past the cutoff wait for that (deleting them row by row would only make dead tuples).
    Events with a delivery that failed, died or is still going are kept whole (they are in the
    dead-letter queue or still owed). Works in batches of `batch_size` events, each in its own
    transaction, taking rows with SKIP LOCKED. Returns how many events were deleted.
    """
    cutoff = timezone.now() - timedelta(days=settings.WEBHOOKS_RETENTION_DAYS)
    deleted = 0
    for _ in range(max_batches):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_DONE_SQL, {"cutoff": cutoff, "limit": batch_size})
            event_ids = [row[0] for row in cursor.fetchall()]
            if event_ids:
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
