"""Writes for event types: create, update, and a new schema version whenever the schema changes."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from .models import EventType, SchemaVersion
from .validation import InvalidSchema, check_schema


def _checked(schema: Any) -> Any:
    try:
        check_schema(schema)
    except InvalidSchema as exc:
        raise ValidationError({"schema": str(exc)}) from exc
    return schema


@transaction.atomic
def event_type_create(
    *, name: str, schema: Any, description: str = "", archived: bool = False
) -> EventType:
    """Create an event type with version 1 of its schema."""
    event_type = EventType(name=name, description=description, archived=archived)
    event_type.full_clean()
    _checked(schema)
    event_type.save()
    SchemaVersion.objects.create(event_type=event_type, version=1, schema=schema)
    return event_type


@transaction.atomic
def event_type_update(
    *,
    event_type: EventType,
    description: str | None = None,
    archived: bool | None = None,
    schema: Any = None,
) -> EventType:
    """Update an event type; a schema different from the current one becomes a new version."""
    locked = EventType.objects.select_for_update().get(pk=event_type.pk)
    if description is not None:
        locked.description = description
    if archived is not None:
        locked.archived = archived
    locked.save()
    if schema is not None:
        _checked(schema)
        current = locked.versions.order_by("-version").first()
        if current is None or current.schema != schema:
            latest = locked.versions.aggregate(v=Max("version"))["v"] or 0
            SchemaVersion.objects.create(event_type=locked, version=latest + 1, schema=schema)
    return locked
