"""Reads for events, deliveries and attempts."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from .models import Delivery, DeliveryAttempt, Event


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
