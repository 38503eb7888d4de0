"""Reads for event types and their schemas."""

from __future__ import annotations

from django.db.models import OuterRef, QuerySet, Subquery

from webhooks_project import generation

from .models import EventType, SchemaVersion


def event_type_list() -> QuerySet[EventType]:
    """Event types annotated with their current schema version number and schema."""
    latest = SchemaVersion.objects.filter(event_type=OuterRef("pk")).order_by("-version")
    return EventType.objects.annotate(
        current_version=Subquery(latest.values("version")[:1]),
        current_schema=Subquery(latest.values("schema")[:1]),
    ).prefetch_related("versions")


def schema_version_current(*, name: str) -> SchemaVersion | None:
    """The newest schema version of the non-archived event type `name`, or None; kept per
    process until the configuration changes (webhooks_project.generation)."""
    return generation.cached(
        ("schema_version", name),
        lambda: (
            SchemaVersion.objects.select_related("event_type")
            .filter(event_type__name=name, event_type__archived=False)
            .order_by("-version")
            .first()
        ),
        cache_none=False,
    )
