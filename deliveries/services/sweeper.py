"""The sweeper (beat job `requeue_stuck`): the work rebuilt from PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from deliveries import metrics
from deliveries.models import Delivery, DeliveryAttempt
from webhooks.models import Endpoint
from webhooks_project.db import binding_cursor

from . import ordering
from .enqueue import deliveries_enqueue

logger = logging.getLogger(__name__)

_D = Delivery._meta.db_table
_P = Endpoint._meta.db_table


WORKER_LOST = "worker_lost"


def _record_lost_attempts(*, delivery_ids: Sequence[int], now: datetime) -> int:
    """Record the try of each expired claim that left no attempt row (its worker was killed, or
    its lease ran out, between claiming and recording): outcome `unknown`, error_class
    `worker_lost`, started when it was claimed, and count it in the metrics. Called with the
    rows locked, before they are given back, so the audit log has every try."""
    rows = list(
        Delivery.objects.filter(id__in=delivery_ids)
        .exclude(attempts__number=F("attempt_count"))
        .filter(attempt_count__gt=0)
        .values("id", "attempt_count", "last_attempt_at", "endpoint_id", "event__event_type_id")
    )
    if not rows:
        return 0
    DeliveryAttempt.objects.bulk_create(
        [
            DeliveryAttempt(
                delivery_id=row["id"],
                number=row["attempt_count"],
                outcome=DeliveryAttempt.Outcome.UNKNOWN,
                started_at=row["last_attempt_at"] or now,  # when it was claimed
                duration_ms=0.0,
                error="the worker was lost before it recorded this try (killed, or its lease "
                "ran out): whether the consumer received it is unknown; it is tried again",
                error_class=WORKER_LOST,
            )
            for row in rows
        ],
        ignore_conflicts=True,  # recorded meanwhile by a worker that was only late
    )
    deltas = metrics.Deltas()
    for row in rows:
        deltas.of(row["endpoint_id"], row["event__event_type_id"]).lost += 1  # type: ignore[arg-type]  # the stubs type a string primary key's _id as int
    metrics.stats_add(deltas, at=now)
    logger.warning("recorded %d tries whose worker was lost", len(rows))
    return len(rows)


def _expired_leases(now: datetime) -> QuerySet[Delivery]:
    """In-flight rows whose lease ran out, except claims made before PostgreSQL last started,
    for one lease after that start: their workers may be alive, waiting for the database to
    record their answers or renew; they get one lease to do so before the sweeper takes any
    back. Taking them back at once had a delivery sent again while its first answer waited in
    the recorder."""
    expired = Delivery.objects.filter(status=Delivery.Status.IN_FLIGHT, lease_expires_at__lt=now)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_postmaster_start_time()")
        started = cursor.fetchone()[0]
    if now - started < timedelta(seconds=settings.WEBHOOKS_LEASE_SECONDS):
        expired = expired.exclude(last_attempt_at__lt=started)
    return expired


def deliveries_requeue_stuck(*, batch_size: int = 1000, max_batches: int = 50) -> dict[str, int]:
    """Rebuild the work from PostgreSQL: the beat job `requeue_stuck`.

    1. `in_flight` rows whose lease expired (the worker died mid-request) go back to `pending`.
    2. Due `pending` rows with no live message (parked retries, messages lost with a broker
       outage or restart) are marked dispatched and published after commit.
    Rows are taken with FOR UPDATE SKIP LOCKED, so two sweeps at once never publish a row twice.
    """
    now = timezone.now()
    reclaimed = 0
    with transaction.atomic():
        expired = list(
            _expired_leases(now)
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[: batch_size * max_batches]
        )
        if expired:
            _record_lost_attempts(delivery_ids=expired, now=now)
            reclaimed = Delivery.objects.filter(id__in=expired).update(
                status=Delivery.Status.PENDING,
                lease_expires_at=None,
                next_attempt_at=now,
                dispatched_at=None,
            )
            # an ordered one frees its key's slot and stays its head (services/ordering.py)
            ordering.keys_settle(ordering.keys_of(expired), now=now)
            logger.warning("took back %d deliveries whose lease expired", reclaimed)

    # ordering keys whose slot outlived any lease (the paths that end a claim free it)
    ordering.stale_slots_settle(
        claimed_before=now - timedelta(seconds=2 * settings.WEBHOOKS_LEASE_SECONDS)
    )

    stale = now - timedelta(seconds=settings.WEBHOOKS_REDISPATCH_AFTER)
    published = 0
    # Healthy endpoints: everything due. A failing endpoint (its last attempt failed) gets at
    # most WEBHOOKS_FAILING_ENDPOINT_BATCH per sweep: a backlog for an endpoint that is down is
    # paced instead of being claimed and put back again and again; once an attempt succeeds,
    # the next sweep sends the rest.
    healthy = Endpoint.objects.filter(pk=OuterRef("endpoint_id"), failing_since__isnull=True)
    for _ in range(max_batches):
        with transaction.atomic():
            ids = list(
                Delivery.objects.select_for_update(skip_locked=True)
                .filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
                .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lte=stale))
                .filter(Exists(healthy))
                .order_by("next_attempt_at")
                .values_list("id", flat=True)[:batch_size]
            )
            Delivery.objects.filter(id__in=ids).update(dispatched_at=now)
        if ids:
            deliveries_enqueue(delivery_ids=ids)
            published += len(ids)
        if len(ids) < batch_size:
            break
    with transaction.atomic(), binding_cursor() as cursor:
        cursor.execute(
            f"""
            WITH picked AS (
                SELECT d.id FROM {_P} AS p CROSS JOIN LATERAL (
                    SELECT id FROM {_D}
                     WHERE endpoint_id = p.id AND status = 'pending' AND next_attempt_at <= %(now)s
                       AND (dispatched_at IS NULL OR dispatched_at <= %(stale)s)
                     ORDER BY next_attempt_at
                     LIMIT %(cap)s
                       FOR UPDATE SKIP LOCKED
                ) AS d
                WHERE p.failing_since IS NOT NULL
            )
            UPDATE {_D} SET dispatched_at = %(now)s FROM picked WHERE {_D}.id = picked.id
            RETURNING {_D}.id
            """,  # noqa: S608 - table names are ours, every value is a parameter
            {"now": now, "stale": stale, "cap": settings.WEBHOOKS_FAILING_ENDPOINT_BATCH},
        )
        paced = [row[0] for row in cursor.fetchall()]
    if paced:
        deliveries_enqueue(delivery_ids=paced)
        published += len(paced)
    return {"reclaimed": reclaimed, "published": published}
