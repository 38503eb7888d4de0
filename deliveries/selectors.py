"""Reads for events, deliveries and attempts."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, QuerySet

from .models import DeadLetter, Delivery, DeliveryAttempt, Event


def event_list() -> QuerySet[Event]:
    """Events, newest first, with their delivery counts."""
    return (
        Event.objects.select_related("application")
        .annotate(delivery_count=Count("deliveries"))
        .order_by("-created_at", "-id")  # GROUP BY queries drop Meta.ordering
    )


def delivery_list(
    *, event: str | None = None, endpoint: str | None = None, status: str | None = None
) -> QuerySet[Delivery]:
    """Deliveries, newest first, filtered by event id, endpoint id and status."""
    qs = Delivery.objects.all()
    if event:
        qs = qs.filter(event_id=event)
    if endpoint:
        qs = qs.filter(endpoint_id=endpoint)
    if status:
        qs = qs.filter(status=status)
    return qs


def attempt_list(*, delivery_id: int) -> QuerySet[DeliveryAttempt]:
    """Every attempt of a delivery, in order."""
    return DeliveryAttempt.objects.filter(delivery_id=delivery_id).order_by("number")


def dead_letter_list(
    *,
    endpoint: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    include_replayed: bool = False,
) -> QuerySet[DeadLetter]:
    """Dead letters, newest first; by default only those still waiting for a replay."""
    qs = DeadLetter.objects.all()
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
