"""Serializers for events, deliveries and attempts."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from rest_framework import serializers

from deliveries.models import DeadLetter, Delivery, DeliveryAttempt, Event
from deliveries.services.ingest import EventInput
from webhooks.models import Application
from webhooks.subscriptions import MAX_EVENT_CHANNELS
from webhooks_project.strict import StrictFields

MAX_BATCH = 1000


_PLAIN = {"type", "data"}


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(dict.fromkeys(values)) if values is not None else None


class EventCreateSerializer(StrictFields, serializers.Serializer):
    """What a source posts: the type, the data, and optional application, key and time."""

    type = serializers.CharField(max_length=200)
    # the serializer's metaclass moves declared fields off the class: .data is not shadowed
    data = serializers.JSONField(help_text="Checked against the event type's JSON Schema.")  # type: ignore[assignment]
    application = serializers.CharField(max_length=64, required=False, allow_null=True)
    idempotency_key = serializers.CharField(max_length=200, required=False, allow_null=True)
    occurred_at = serializers.DateTimeField(required=False, allow_null=True)
    channels = serializers.ListField(
        child=serializers.CharField(max_length=128),
        required=False,
        allow_null=True,
        max_length=MAX_EVENT_CHANNELS,
        help_text="Channels it is sent on: endpoints that listen to channels get it only if "
        "they listen to one of these (README: Routing).",
    )
    ordering_key = serializers.CharField(
        max_length=200,
        required=False,
        allow_null=True,
        trim_whitespace=False,
        help_text="Endpoints with ordering per_key get the events of one key one at a time, "
        "in the order they were accepted (README: Routing).",
    )
    endpoints = serializers.ListField(
        child=serializers.CharField(max_length=40),
        required=False,
        allow_null=True,
        allow_empty=False,
        max_length=100,
        help_text="Send only to these endpoints (of the event's application, each still "
        "subscribed to the type and passing its filters).",
    )

    def validate_ordering_key(self, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise serializers.ValidationError("An ordering key has no control characters.")
        return value

    @staticmethod
    def plain_inputs(items: list[Any]) -> list[EventInput] | None:
        """The inputs of a batch whose every item is only a `type` this serializer accepts as
        given and a non-null `data`, without running it per item (a sixth of a batch's time
        in the web); None when any item needs the serializer (its errors are the answer)."""
        inputs = []
        for item in items:
            if not isinstance(item, dict) or item.keys() != _PLAIN:
                return None
            name, data = item["type"], item["data"]
            if (
                not isinstance(name, str)
                or not 0 < len(name) <= 200
                or name != name.strip()
                or "\x00" in name
                or data is None
            ):
                return None
            inputs.append(EventInput(type=name, data=data))
        return inputs

    @staticmethod
    def input_from(validated: dict[str, Any]) -> EventInput:
        """The service's input from one item's validated data."""
        return EventInput(
            type=validated["type"],
            data=validated["data"],
            application=validated.get("application"),
            idempotency_key=validated.get("idempotency_key"),
            occurred_at=validated.get("occurred_at"),
            channels=_tuple(validated.get("channels")),
            endpoints=_tuple(validated.get("endpoints")),
            ordering_key=validated.get("ordering_key"),
        )


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = Delivery
        fields = [
            "id",
            "event",
            "endpoint",
            "status",
            "attempt_count",
            "next_attempt_at",
            "last_attempt_at",
            "last_status_code",
            "completed_at",
            "created_at",
            "payload_expired_at",
            "ordering_key",
            "sequence",
        ]
        read_only_fields = fields


class EventSerializer(serializers.ModelSerializer):
    type = serializers.CharField(source="event_type_id", read_only=True)
    application: serializers.SlugRelatedField[Application] = serializers.SlugRelatedField(
        slug_field="uid", read_only=True
    )
    schema_version = serializers.IntegerField(source="schema_version.version", read_only=True)
    deliveries = serializers.SerializerMethodField()

    class Meta:
        model = Event
        fields = [
            "id",
            "type",
            "data",
            "application",
            "idempotency_key",
            "occurred_at",
            "created_at",
            "schema_version",
            "channels",
            "endpoints",
            "ordering_key",
            "deliveries",
        ]
        read_only_fields = fields

    def get_deliveries(self, event: Event) -> int:
        count = getattr(event, "delivery_count", None)
        return count if count is not None else Delivery.objects.of_events([event.pk]).count()


class EventDetailSerializer(EventSerializer):
    """An event with its deliveries listed in full."""

    # in full here, where the parent has a method field (ids)
    deliveries = DeliverySerializer(many=True, read_only=True)  # type: ignore[assignment]


class AcceptedEventSerializer(serializers.Serializer):
    """The answer to ingestion: the event and how many deliveries it fanned out to."""

    def to_representation(self, instance: Any) -> dict[str, Any]:
        # Built by hand from what ingestion already holds: no query per event in a batch.
        event = instance.event
        return {
            "id": event.id,
            "type": event.event_type_id,
            "data": event.data,
            "application": event.application.uid if event.application_id else None,
            "idempotency_key": event.idempotency_key,
            "occurred_at": _datetime(event.occurred_at),
            "created_at": _datetime(event.created_at),
            "schema_version": event.schema_version.version if event.schema_version_id else None,
            "channels": event.channels,
            "endpoints": event.endpoints,
            "ordering_key": event.ordering_key,
            "deliveries": instance.delivery_count,
            "created": instance.created,
        }


_DATETIME = serializers.DateTimeField()


@lru_cache(maxsize=64)
def _datetime(value: datetime) -> str:
    """As the API writes times; the events of a batch share theirs: formatted once."""
    return _DATETIME.to_representation(value)


class AttemptSerializer(serializers.ModelSerializer):
    # stored once per delivery: an attempt without its own sent the delivery's; null once the
    # payload expired (WEBHOOKS_PAYLOAD_RETENTION_DAYS)
    request_body = serializers.CharField(source="sent_body", read_only=True, allow_null=True)

    class Meta:
        model = DeliveryAttempt
        fields = [
            "number",
            "outcome",
            "started_at",
            "duration_ms",
            "status_code",
            "error",
            "error_class",
            "request_headers",
            "request_body",
            "request_body_bytes",
            "response_headers",
            "response_body",
        ]
        read_only_fields = fields


class DeadLetterSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeadLetter
        fields = [
            "id",
            "delivery",
            "endpoint",
            "event_type",
            "reason",
            "last_status_code",
            "created_at",
            "replayed_at",
            "replayed_by",
            "skipped",
        ]
        read_only_fields = fields


class DeadLetterFilterSerializer(StrictFields, serializers.Serializer):
    """The filters of the list and of bulk replay."""

    endpoint = serializers.CharField(required=False)
    event_type = serializers.CharField(required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)


class TimeRangeSerializer(serializers.Serializer):
    """`created_after` and `created_before` of the event and delivery lists (ISO 8601; the
    second excluded); `since` and `until` are their older names."""

    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        for new, old in (("created_after", "since"), ("created_before", "until")):
            if new in attrs and old in attrs:
                raise serializers.ValidationError({old: [f"Give {new} or {old}, not both."]})
        return attrs


class ReplayResultSerializer(serializers.Serializer):
    replayed = serializers.IntegerField()
    skipped_disabled = serializers.IntegerField(
        help_text="Dead letters of disabled endpoints, left waiting: re-enable the endpoint first."
    )


class MetricsQuerySerializer(serializers.Serializer):
    window = serializers.ChoiceField(choices=["1h", "24h", "7d"], default="24h")
    endpoint = serializers.CharField(required=False, help_text="An endpoint id.")
    event_type = serializers.CharField(required=False, help_text="An event type name.")


class _DeliveryCountsSerializer(serializers.Serializer):
    finished = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="Ended without retry: 4xx, 410, refusals.")
    dead = serializers.IntegerField(help_text="Every attempt of the schedule failed.")
    success_rate = serializers.FloatField(
        allow_null=True, help_text="succeeded / finished; null when nothing finished."
    )
    filtered = serializers.IntegerField(
        help_text="Events an endpoint's filter kept from it (no delivery was made)."
    )


class _DistributionSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    mean = serializers.FloatField(allow_null=True, help_text="Exact.")
    p50 = serializers.FloatField(allow_null=True, help_text="From histogram buckets.")
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)


class _RetriesSerializer(serializers.Serializer):
    failed_attempts_retried = serializers.IntegerField()
    dead_letters = serializers.IntegerField()
    attempts_lost = serializers.IntegerField(
        help_text="Tries whose worker was lost before recording them (outcome unknown); each "
        "is in the attempt log with error_class worker_lost, and the delivery is tried again."
    )


class _PointSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    dead = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True)
    latency_ms_mean = serializers.FloatField(allow_null=True)
    latency_ms_p95 = serializers.FloatField(allow_null=True)
    failed_attempts_retried = serializers.IntegerField()
    dead_letters = serializers.IntegerField()


class _SeriesSerializer(serializers.Serializer):
    step_seconds = serializers.IntegerField()
    points = _PointSerializer(many=True)


class MetricsSerializer(serializers.Serializer):
    """Delivery success rate, latency to the consumer and failed retries over a window."""

    window = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    deliveries = _DeliveryCountsSerializer()
    latency_ms = _DistributionSerializer(
        help_text="Event accepted -> the consumer's 2xx, over the deliveries that succeeded."
    )
    attempt_duration_ms = _DistributionSerializer(help_text="Each HTTP attempt's duration.")
    retries = _RetriesSerializer()
    series = _SeriesSerializer()
