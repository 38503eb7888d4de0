"""Writes for event types: create, update, and a new schema version whenever the schema changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from audit import chain as audit_chain
from webhooks_project.schedules import schedule_problem

from . import masking
from .compatibility import Change, breaking_changes
from .models import EventType, SchemaVersion
from .payloads import PayloadRefused, build_body, check_mapping, check_sensitive_fields, shape
from .transform import TransformError
from .validation import InvalidSchema, check_schema, validate


class SchemaRefused(ValidationError):
    """A schema document this service will not store (invalid, a `$ref` that leaves it, a
    reference cycle, a pattern RE2 cannot run); `api_errors` point into the request body."""

    def __init__(self, field: str, exc: InvalidSchema) -> None:
        super().__init__({field: str(exc)})
        self.api_errors = [
            {"pointer": f"/{field}{exc.pointer}", "detail": exc.message, "keyword": "schema"}
        ]


def _checked(schema: Any, field: str = "schema") -> Any:
    try:
        check_schema(schema)
    except InvalidSchema as exc:
        raise SchemaRefused(field, exc) from exc
    return schema


def schema_document_check(schema: Any) -> None:
    """The checks a schema document passes before it is stored (raises SchemaRefused, a
    ValidationError keyed `schema`): for forms that save through the services."""
    _checked(schema)


def _masking_checked(masking_rules: Any, sensitive_fields: Any) -> None:
    try:
        masking.parse_rules(masking_rules)
    except masking.MaskingError as exc:
        raise ValidationError({"masking": str(exc)}) from exc
    try:
        check_sensitive_fields(sensitive_fields)
    except masking.MaskingError as exc:
        raise ValidationError({"sensitive_fields": str(exc)}) from exc


def _transform_checked(transform: Any, output_schema: Any) -> None:
    if transform is not None:
        try:
            check_mapping(transform)
        except TransformError as exc:
            raise ValidationError({"transform": f"{exc.pointer}: {exc.message}"}) from exc
    if output_schema is not None:
        _checked(output_schema, "output_schema")


def _example_checked(example: Any, schema: Any) -> None:
    if example is None:
        return
    problems = validate(example, schema, cache_key=("example", id(schema)), use_cache=False)
    if problems:
        raise ValidationError({"example": [f"{p.pointer or '/'}: {p.detail}" for p in problems]})


def _snapshot(event_type: EventType, version: int | None) -> dict[str, Any]:
    return {
        "name": event_type.name,
        "description": event_type.description,
        "archived": event_type.archived,
        "schema_version": version,
        "transform": event_type.transform,
        "output_schema": event_type.output_schema,
        "masking": event_type.masking,
        "sensitive_fields": list(event_type.sensitive_fields or []),
        "retry_schedule": event_type.retry_schedule,
    }


def _retry_schedule_checked(schedule: Any) -> None:
    problem = schedule_problem(schedule)
    if problem is not None:
        raise ValidationError({"retry_schedule": problem})


def event_type_fields_check(
    *,
    schema: Any,
    example: Any = None,
    transform: Any = None,
    output_schema: Any = None,
    masking: Any = None,
    sensitive_fields: Any = None,
    retry_schedule: Any = None,
) -> None:
    """The rules every way of saving an event type runs (the API, the admin): the example
    against the schema, the mapping, the output schema, masking rules, sensitive fields and
    the retry schedule. Raises a ValidationError keyed by field."""
    _example_checked(example, schema)
    _transform_checked(transform, output_schema)
    _masking_checked(masking, sensitive_fields or [])
    _retry_schedule_checked(retry_schedule)


class BreakingSchemaChange(Exception):
    """A new schema version breaks what the previous one accepted; pass allow_breaking."""

    def __init__(self, changes: list[Change]) -> None:
        super().__init__(f"{len(changes)} breaking changes")
        self.changes = changes


@transaction.atomic
def event_type_create(
    *,
    name: str,
    schema: Any,
    description: str = "",
    archived: bool = False,
    example: Any = None,
    transform: Any = None,
    output_schema: Any = None,
    masking: Any = None,
    sensitive_fields: Any = None,
    retry_schedule: Any = None,
    actor: str = "system",
) -> EventType:
    """Create an event type with version 1 of its schema."""
    _retry_schedule_checked(retry_schedule)
    event_type = EventType(
        name=name,
        description=description,
        archived=archived,
        example=example,
        transform=transform,
        output_schema=output_schema,
        masking=masking,
        sensitive_fields=sensitive_fields or [],
        retry_schedule=retry_schedule,
    )
    event_type.full_clean()
    _checked(schema)
    _example_checked(example, schema)
    _transform_checked(transform, output_schema)
    _masking_checked(masking, event_type.sensitive_fields)
    event_type.save()
    SchemaVersion.objects.create(
        event_type=event_type, version=1, schema=schema, created_by=actor[:200]
    )
    audit_chain.record(
        actor=actor,
        action="event_type.created",
        object_type="event_type",
        object_id=event_type.name,
        after=_snapshot(event_type, 1),
    )
    return event_type


_UNSET: Any = object()


@dataclass(frozen=True)
class EventTypeUpdate:
    event_type: EventType
    new_version: SchemaVersion | None  # None when the schema did not change
    changes: list[Change]  # the breaking changes accepted with allow_breaking


@transaction.atomic
def event_type_update(
    *,
    event_type: EventType,
    description: str | None = None,
    archived: bool | None = None,
    schema: Any = None,
    example: Any = None,
    transform: Any = _UNSET,
    output_schema: Any = _UNSET,
    masking: Any = _UNSET,
    sensitive_fields: Any = _UNSET,
    retry_schedule: Any = _UNSET,
    allow_breaking: bool = False,
    actor: str = "system",
) -> EventTypeUpdate:
    """Update an event type; a schema different from the current one becomes a new version.

    A new version with breaking changes against the current one (schemas_app/compatibility.py)
    is refused with BreakingSchemaChange unless `allow_breaking`; then the changes are kept on
    the version.
    """
    locked = EventType.objects.select_for_update().get(pk=event_type.pk)
    current = locked.versions.order_by("-version").first()
    before = _snapshot(locked, current.version if current is not None else None)
    if description is not None:
        locked.description = description
    if archived is not None:
        locked.archived = archived
    new_version = None
    changes: list[Change] = []
    effective = current.schema if current is not None else {}
    if schema is not None:
        _checked(schema)
        if current is None or current.schema != schema:
            changes = breaking_changes(current.schema, schema) if current is not None else []
            if changes and not allow_breaking:
                raise BreakingSchemaChange(changes)
            latest = locked.versions.aggregate(v=Max("version"))["v"] or 0
            new_version = SchemaVersion.objects.create(
                event_type=locked,
                version=latest + 1,
                schema=schema,
                created_by=actor[:200],
                changes=[c.as_dict() for c in changes],
            )
            effective = schema
    if example is not None:
        locked.example = example
    if transform is not _UNSET:
        locked.transform = transform  # None removes it
    if output_schema is not _UNSET:
        locked.output_schema = output_schema
    _example_checked(locked.example, effective)
    if masking is not _UNSET:
        locked.masking = masking
    if sensitive_fields is not _UNSET:
        locked.sensitive_fields = sensitive_fields or []  # applies to events accepted from now
    if retry_schedule is not _UNSET:
        _retry_schedule_checked(retry_schedule)
        locked.retry_schedule = retry_schedule  # None: the default; applies to the next retry
    _transform_checked(locked.transform, locked.output_schema)
    _masking_checked(locked.masking, locked.sensitive_fields)
    locked.save()
    version = new_version or current
    audit_chain.record_change(
        actor=actor,
        action="event_type.updated",
        object_type="event_type",
        object_id=locked.name,
        before=before,
        after=_snapshot(locked, version.version if version is not None else None),
    )
    return EventTypeUpdate(event_type=locked, new_version=new_version, changes=changes)


def outbound_schema(event_type: EventType) -> dict[str, Any]:
    """The JSON Schema of the body a consumer receives for this event type.

    `data` is described by the output schema when there is one. Without one, a transformed
    payload has no declared shape (`{}`: anything), and an untransformed one is the event's data
    as validated at ingestion, so the current input schema describes it. Masking can change a
    field's type (a masked number becomes a string); the output schema is checked before it.
    """
    name = event_type.name
    if event_type.output_schema is not None:
        data_schema = event_type.output_schema
    elif event_type.transform is not None:
        data_schema = {}
    else:
        current = event_type.versions.order_by("-version").first()
        data_schema = current.schema if current is not None else {}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{name} webhook",
        "type": "object",
        "required": ["type", "timestamp", "data"],
        "properties": {
            "type": {"const": name},
            "timestamp": {"type": "string", "format": "date-time"},
            "data": data_schema,
        },
    }


class PreviewRejected(Exception):
    """The sample does not pass; `errors` are API error entries with pointers."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(f"{len(errors)} problems")
        self.errors = errors


def event_type_preview(*, event_type: EventType, data: Any, endpoint: Any = None) -> dict[str, Any]:
    """What an event with `data` would be sent as (to `endpoint`): {"payload", "body"}.

    The same steps as a delivery, in the same order: validate against the current schema,
    transform, check the output schema, serialize once. Nothing is stored.
    """
    version = event_type.versions.order_by("-version").first()
    schema = version.schema if version is not None else {}
    problems = validate(data, schema, cache_key=(event_type.name, version.pk if version else 0))
    if problems:
        raise PreviewRejected(
            [
                {"pointer": "/data" + p.pointer, "detail": p.detail, "keyword": p.keyword}
                for p in problems
            ]
        )
    overrides = (endpoint.transforms or {}) if endpoint is not None else {}
    rules = (endpoint.masking or {}) if endpoint is not None else {}
    dumps = lambda value: None if value is None else orjson.dumps(value).decode()  # noqa: E731
    try:
        payload = shape(
            event_type=event_type.name,
            data=data,
            type_mapping=dumps(event_type.transform),
            endpoint_mapping=dumps(overrides.get(event_type.name)),
            output_schema=dumps(event_type.output_schema),
            type_masking=dumps(event_type.masking),
            endpoint_masking=dumps(rules.get(event_type.name)),
            encryption_key=dumps(endpoint.encryption_key) if endpoint is not None else None,
            hash_key=settings.WEBHOOKS_HASH_KEY,
        )
    except PayloadRefused as exc:
        raise PreviewRejected([{"pointer": "/data", "detail": str(exc)}]) from exc
    body = build_body(event_type=event_type.name, occurred_at=timezone.now(), data=payload)
    return {"payload": payload, "body": body.decode()}
