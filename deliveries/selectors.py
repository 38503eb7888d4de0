"""Reads for events, deliveries and attempts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet

from deliveries.partition_keys import LEGACY_END, delivery_id_floor, event_id_at
from webhooks.models import Endpoint

from .models import DeadLetter, Delivery, DeliveryAttempt, Event


def event_list() -> QuerySet[Event]:
    """Events, newest first (ids are time-ordered). Their delivery counts: `delivery_counts`
    of the page (a count joined or grouped over every event read the whole table: 5.5 s with
    a month of rows; a subquery per row looked in every day's partition)."""
    return Event.objects.select_related("application").order_by("-id")


def events_between(
    qs: QuerySet[Event], since: datetime | None, until: datetime | None
) -> QuerySet[Event]:
    """Events accepted in [since, until): the id range of that time first, so that only its
    days' partitions are read, then the exact times."""
    if since:
        qs = qs.filter(id__gte=event_id_at(since), created_at__gte=since)
    if until:
        qs = qs.filter(id__lt=event_id_at(until + timedelta(seconds=2)), created_at__lt=until)
    return qs


def deliveries_between(
    qs: QuerySet[Delivery], since: datetime | None, until: datetime | None
) -> QuerySet[Delivery]:
    """Deliveries made in [since, until), read from the partitions of their events' days: a
    delivery made later for an older event (an endpoint's backfill) sits in its event's day,
    so a range that starts after that day does not list it."""
    if since:
        qs = qs.filter(
            Q(id__gte=delivery_id_floor(since)) | Q(id__lt=LEGACY_END), created_at__gte=since
        )
    if until:
        qs = qs.filter(id__lt=delivery_id_floor(until + timedelta(days=1)), created_at__lt=until)
    return qs


def delivery_counts(event_ids: list[str]) -> dict[str, int]:
    """How many deliveries each of these events has, in one query of their days' partitions."""
    rows = (
        Delivery.objects.of_events(event_ids)
        .order_by()
        .values("event_id")
        .annotate(n=Count("id"))
        .values_list("event_id", "n")
    )
    return dict(rows)


def delivery_list(
    *,
    event: str | None = None,
    endpoint: str | None = None,
    status: str | None = None,
    event_type: str | None = None,
    application: str | None = None,
) -> QuerySet[Delivery]:
    """Deliveries, newest first, filtered by event id, endpoint id, status, their event's type
    and their endpoint's application (uid)."""
    qs = Delivery.objects.order_by("-id")
    if event:
        qs = qs.of_events([event])
    if endpoint:
        qs = qs.filter(endpoint_id=endpoint)
    if status:
        qs = qs.filter(status=status)
    if event_type:
        qs = qs.filter(event__event_type_id=event_type)  # type: ignore[misc]  # the stubs type a string primary key's _id as int
    if application:
        qs = qs.filter(endpoint__application__uid=application)
    return qs


def attempt_list(*, delivery_id: int) -> QuerySet[DeliveryAttempt]:
    """Every attempt of a delivery, in order (with the delivery: it holds the body they sent)."""
    return (
        DeliveryAttempt.objects.filter(delivery_id=delivery_id)
        .select_related("delivery")
        .order_by("number")
    )


def dead_letter_list(
    *,
    endpoint: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    include_replayed: bool = False,
) -> QuerySet[DeadLetter]:
    """Dead letters, newest first; by default only those still waiting for a replay."""
    qs = DeadLetter.objects.order_by("-id")
    if not include_replayed:
        qs = qs.filter(replayed_at__isnull=True)
    if endpoint:
        qs = qs.filter(endpoint_id=endpoint)
    if event_type:
        qs = qs.filter(event_type=event_type)
    if since:
        qs = qs.filter(created_at__gte=since)
    if until:
        qs = qs.filter(created_at__lt=until)
    return qs


@dataclass(frozen=True)
class Backlog:
    """What waits, for the admin dashboard and the Prometheus gauges."""

    pending: int  # due now or scheduled for a retry
    lease_expired: int  # in flight past the lease: the worker died; the sweeper takes them back
    dead_letters_waiting: int
    disabled_endpoints: int
    # the pending delivery longest past its due time (id, endpoint_id, event_id,
    # attempt_count, next_attempt_at), or None when none is overdue
    most_overdue: Mapping[str, Any] | None


def backlog(now: datetime) -> Backlog:
    """Counts through the partial indexes on pending, in-flight and waiting rows."""
    pending = Delivery.objects.filter(status=Delivery.Status.PENDING)
    return Backlog(
        pending=pending.count(),
        lease_expired=Delivery.objects.filter(
            status=Delivery.Status.IN_FLIGHT, lease_expires_at__lt=now - timedelta(seconds=1)
        ).count(),
        dead_letters_waiting=DeadLetter.objects.filter(replayed_at__isnull=True).count(),
        disabled_endpoints=Endpoint.objects.filter(enabled=False).count(),
        most_overdue=pending.filter(next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values("id", "endpoint_id", "event_id", "attempt_count", "next_attempt_at")
        .first(),
    )
