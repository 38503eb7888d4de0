"""Payloads that expire before their rows (WEBHOOKS_PAYLOAD_RETENTION_DAYS), as Svix's
`payloadRetentionPeriod` does: the bodies sent and the answers' bodies and headers of a delivery
that succeeded go that many days after it did, while its delivery and attempt rows (status,
times, status codes, errors, the headers we sent) stay until the day is dropped
(services.partitions). A delivery that did not succeed keeps everything: it may be replayed,
and its answers say why it failed.

This is for keeping less customer data, not for disk: the cleared rows' space is reused only
once their day is dropped. Each day partition is passed over once, in batches by primary key
(O(rows of the day), each batch a short transaction), and noted in `PayloadExpiredDay`; the
default and legacy partitions, which hold few rows or are on their way out, are read through
the index on (status, completed_at) at every run.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from deliveries.models import Delivery, DeliveryAttempt, PayloadExpiredDay
from deliveries.partition_keys import bounds, day_start

from .partitions import partition_days

logger = logging.getLogger(__name__)

_D = Delivery._meta.db_table
_A = DeliveryAttempt._meta.db_table

# The deliveries of one batch that succeeded before the cutoff and still hold a payload; their
# attempts lose the bodies they sent and every answer's body and headers. Answers how many
# deliveries it cleared.
_CLEAR_SQL = f"""
WITH cleared AS (
    UPDATE {{part}} SET request_body = NULL, payload_expired_at = %(now)s
     WHERE id = ANY(%(ids)s) AND status = 'succeeded' AND completed_at < %(cutoff)s
       AND payload_expired_at IS NULL
    RETURNING id
), attempts AS (
    UPDATE {_A} SET request_body = NULL, response_body = '', response_headers = '{{{{}}}}'::jsonb
      FROM cleared
     WHERE {_A}.delivery_id = cleared.id
       AND {_A}.delivery_id >= %(low)s AND {_A}.delivery_id < %(high)s
)
SELECT count(*) FROM cleared
"""  # noqa: S608 - table names are ours, every value is a parameter


def _clear(part: str, ids: list[int], *, cutoff: datetime, now: datetime) -> int:
    """Clear the payloads of the succeeded deliveries among `ids` (rows of `part`)."""
    if not ids:
        return 0
    with connection.cursor() as cursor:  # one statement: its own transaction
        cursor.execute(
            _CLEAR_SQL.format(part=part),
            {"ids": ids, "cutoff": cutoff, "now": now, "low": min(ids), "high": max(ids) + 1},
        )
        return int(cursor.fetchone()[0])


def expire_day(day: date, *, cutoff: datetime, now: datetime, batch_size: int = 5000) -> int:
    """Clear the payloads of `day`'s deliveries that succeeded before `cutoff`, walking its
    partition by primary key. Returns how many deliveries were cleared."""
    part = f"{_D}_{bounds(day).suffix}"
    after = -1
    cleared = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {part} WHERE id > %s ORDER BY id LIMIT %s",  # noqa: S608
                [after, batch_size],
            )
            ids = [row[0] for row in cursor.fetchall()]
        cleared += _clear(part, ids, cutoff=cutoff, now=now)
        if len(ids) < batch_size:
            return cleared
        after = ids[-1]


def _expire_leftovers(*, cutoff: datetime, now: datetime, batch_size: int = 5000) -> int:
    """The default and legacy partitions: found through (status, completed_at) every run."""
    cleared = 0
    for suffix in ("default", "legacy"):
        part = f"{_D}_{suffix}"
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s)", [part])
            if cursor.fetchone()[0] is None:
                continue
        while True:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT id FROM {part} WHERE status = 'succeeded' "  # noqa: S608
                    "AND completed_at < %s AND payload_expired_at IS NULL LIMIT %s",
                    [cutoff, batch_size],
                )
                ids = [row[0] for row in cursor.fetchall()]
            done = _clear(part, ids, cutoff=cutoff, now=now)
            cleared += done
            if len(ids) < batch_size or not done:
                break
    return cleared


def payloads_expire(*, now: datetime | None = None) -> dict[str, int]:
    """Beat job (within `prune`): clear the payloads of deliveries that succeeded more than
    WEBHOOKS_PAYLOAD_RETENTION_DAYS ago (0: nothing to do). A day is passed over once its whole
    span is past that; a delivery of it that succeeds later keeps its payload until the day is
    dropped. Returns the days passed over and the deliveries cleared."""
    days_kept = settings.WEBHOOKS_PAYLOAD_RETENTION_DAYS
    totals = {"days": 0, "deliveries": 0}
    if not days_kept:
        return totals
    now = now or timezone.now()
    cutoff = now - timedelta(days=days_kept)
    done = set(PayloadExpiredDay.objects.values_list("day", flat=True))
    for day in partition_days():
        if day_start(day) + timedelta(days=1) > cutoff:
            break
        if day in done:
            continue
        cleared = expire_day(day, cutoff=cutoff, now=now)
        PayloadExpiredDay.objects.create(day=day, expired_at=now, deliveries=cleared)
        totals["days"] += 1
        totals["deliveries"] += cleared
        logger.info("cleared the payloads of %d deliveries of %s", cleared, day)
    totals["deliveries"] += _expire_leftovers(cutoff=cutoff, now=now)
    # days dropped since: their notes go too
    oldest = (now - timedelta(days=settings.WEBHOOKS_RETENTION_DAYS + 2)).astimezone(UTC).date()
    PayloadExpiredDay.objects.filter(day__lt=oldest).delete()
    return totals
