"""Serializers for event types."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from schemas_app.models import EventType, SchemaVersion, event_type_name_validator
from webhooks_project.schedules import MAX_RETRY_DELAY, MAX_SCHEDULE_LENGTH
from webhooks_project.strict import StrictFields


class SchemaVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = SchemaVersion
        fields = ["version", "schema", "created_at", "created_by", "changes"]
        read_only_fields = fields


class EventTypeSerializer(StrictFields, serializers.ModelSerializer):
    """An event type with its current schema; writing a changed schema makes a new version."""

    name = serializers.CharField(max_length=200, validators=[event_type_name_validator])
    schema = serializers.JSONField(
        help_text="JSON Schema (Draft 2020-12) that every event's `data` must match."
    )
    version = serializers.IntegerField(read_only=True, source="current_version")
    example = serializers.JSONField(
        required=False, allow_null=True, help_text="An example `data`; checked against the schema."
    )
    allow_breaking = serializers.BooleanField(
        required=False,
        default=False,
        write_only=True,
        help_text="Save a new schema version even if it breaks what the current one accepted.",
    )
    versions = SchemaVersionSerializer(many=True, read_only=True)
    transform = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="Mapping from an event's data to the payload sent: leaves are JMESPath "
        'expressions over `data`, or {"$literal": value}.',
    )
    output_schema = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="JSON Schema every payload must match after the transformation.",
    )
    masking = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text='Rules applied after the transformation: [{"path": "/card", "action": "mask", '
        '"keep": 4}]; actions redact, mask, hash, drop, encrypt.',
    )
    sensitive_fields = serializers.ListField(
        child=serializers.CharField(max_length=500),
        required=False,
        allow_null=True,
        help_text="JSON pointers into `data` whose values are stored encrypted.",
    )
    retry_schedule = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=MAX_RETRY_DELAY),
        required=False,
        allow_null=True,
        max_length=MAX_SCHEDULE_LENGTH,
        help_text="Delays in seconds before each retry of this type's deliveries, used unless "
        "the endpoint has its own; null: WEBHOOKS_RETRY_SCHEDULE.",
    )

    class Meta:
        model = EventType
        fields = [
            "name",
            "description",
            "schema",
            "version",
            "example",
            "transform",
            "output_schema",
            "masking",
            "sensitive_fields",
            "retry_schedule",
            "archived",
            "allow_breaking",
            "versions",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def to_representation(self, instance: EventType) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["schema"] = getattr(instance, "current_schema", None)
        return data

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        if self.instance is not None:
            fields["name"].read_only = True  # the name is the public key
            fields["schema"].required = False
        return fields


class PreviewSerializer(StrictFields, serializers.Serializer):
    # the serializer's metaclass moves declared fields off the class: .data is not shadowed
    data = serializers.JSONField(help_text="A sample event's data.")  # type: ignore[assignment]
    endpoint = serializers.CharField(
        required=False, allow_null=True, help_text="Preview what this endpoint would receive."
    )


class PreviewResultSerializer(serializers.Serializer):
    payload = serializers.JSONField(help_text="The payload after transformation.")
    body = serializers.CharField(help_text="Exactly the bytes that would be sent (and signed).")
