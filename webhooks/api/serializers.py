"""Serializers for applications and endpoints."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from audit.models import AuditRecord
from webhooks import headers as headers_rules
from webhooks import signing
from webhooks.models import Application, Endpoint
from webhooks.scoping import key_application
from webhooks.services import MAX_TIMEOUT_SECONDS
from webhooks_project.schedules import MAX_RETRY_DELAY, MAX_SCHEDULE_LENGTH
from webhooks_project.strict import StrictFields

MAX_RATE_LIMIT = 100_000  # requests per second; above this a limit means nothing


class ApplicationSerializer(StrictFields, serializers.ModelSerializer):
    class Meta:
        model = Application
        fields = [
            "uid",
            "name",
            "portal_name",
            "portal_logo_url",
            "portal_accent",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def validate_uid(self, value: str) -> str:
        limited = key_application(self.context.get("request"))
        if limited is not None and self.instance is not None and value != limited.uid:
            raise serializers.ValidationError(
                f"This API key is limited to application {limited.uid!r}; it cannot change "
                "that application's uid."
            )
        return value


class EndpointSerializer(StrictFields, serializers.ModelSerializer):
    """An endpoint; `secret` appears only in the answer to create."""

    application = serializers.SlugRelatedField(
        slug_field="uid", queryset=Application.objects.all(), required=False, allow_null=True
    )
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        allow_empty=True,
        help_text="Event type names this endpoint receives, or wildcards over dotted names "
        "(order.*); empty means all business events.",
    )
    headers = serializers.DictField(
        child=serializers.CharField(trim_whitespace=False, allow_blank=True),
        required=False,
        help_text="Extra headers sent with every request. Reads show each value as "
        f"{headers_rules.MASK!r}; GET endpoints/{{id}}/headers/ reveals them. At most "
        f"{headers_rules.MAX_HEADERS} headers and {headers_rules.MAX_TOTAL_BYTES} bytes.",
    )
    retry_schedule = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=MAX_RETRY_DELAY),
        required=False,
        allow_null=True,
        max_length=MAX_SCHEDULE_LENGTH,
        help_text="Delays in seconds before each retry; attempts = 1 + its length.",
    )
    timeout_seconds = serializers.IntegerField(
        min_value=1, max_value=MAX_TIMEOUT_SECONDS, required=False, allow_null=True
    )
    rate_limit_per_second = serializers.IntegerField(
        min_value=1,
        max_value=MAX_RATE_LIMIT,
        required=False,
        allow_null=True,
        help_text=(
            "Requests per second to this endpoint, across all workers (bursts of up to one "
            "second's worth). Deliveries over it wait; none fails for it. Null: no limit."
        ),
    )
    transforms = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        allow_null=True,
        help_text="Per event type name, a mapping used instead of the type's for this endpoint.",
    )
    masking = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        allow_null=True,
        help_text="Per event type name, masking rules used instead of the type's.",
    )
    encryption_key = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="Public JWK (RSA 2048+ or EC) that `encrypt` masking encrypts for.",
    )
    filter = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="A condition over the event's data ($eq, $neq, $in, $nin, $gt, $gte, $lt, "
        "$lte, $exist, $and, $or, $not; dotted paths): only matching events are delivered. "
        "Null: every event.",
    )
    filters = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        allow_null=True,
        help_text="Per event type name, a condition over its data, on top of `filter`.",
    )
    channels = serializers.ListField(
        child=serializers.CharField(max_length=128),
        required=False,
        allow_empty=True,
        help_text="Only events sent on one of these channels; empty: events on any channel or "
        "none.",
    )

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "url",
            "description",
            "application",
            "event_types",
            "enabled",
            "disabled_reason",
            "disabled_at",
            "failing_since",
            "headers",
            "rate_limit_per_second",
            "retry_schedule",
            "timeout_seconds",
            "signature_scheme",
            "transforms",
            "masking",
            "encryption_key",
            "filter",
            "filters",
            "channels",
            "ordering",
            "ordering_on_dead",
            "trace_propagation",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "id",
            "disabled_reason",
            "disabled_at",
            "failing_since",
            "created_at",
            "updated_at",
        ]

    def validate_application(self, value: Application | None) -> Application | None:
        """A key limited to an application can never move an endpoint out of it: not to
        another application (that one does not exist for it) and not to none (all events)."""
        limited = key_application(self.context.get("request"))
        if limited is not None and (value is None or value.pk != limited.pk):
            raise serializers.ValidationError(
                f"This API key is limited to application {limited.uid!r}; an endpoint's "
                "application can only be that one."
            )
        return value

    def validate_headers(self, value: dict[str, str]) -> dict[str, str]:
        try:
            return headers_rules.check_headers(value)
        except headers_rules.HeaderRefused as exc:
            if exc.name:
                raise serializers.ValidationError({exc.name: [str(exc)]}) from exc
            raise serializers.ValidationError(str(exc)) from exc

    def to_representation(self, instance: Any) -> dict[str, Any]:
        """Header values are secrets (tokens, cookies): reads show the names only; the values
        are at `GET endpoints/{id}/headers/` for a key with `endpoints:manage`."""
        data = super().to_representation(instance)
        data["headers"] = headers_rules.masked(data.get("headers"))
        return data


class FilterTestSerializer(StrictFields, serializers.Serializer):
    """An event to try against an endpoint's subscription and filters."""

    type = serializers.CharField(max_length=200)
    data = serializers.JSONField(help_text="The event's data, as a source would post it.")  # type: ignore[assignment]


class FilterTestResultSerializer(serializers.Serializer):
    matches = serializers.BooleanField(help_text="Whether the event would be delivered here.")
    subscribed = serializers.BooleanField(help_text="Whether the endpoint gets this type.")
    clause = serializers.CharField(
        allow_null=True,
        help_text="JSON pointer into the endpoint (/filter/... or /filters/<type>/...) of the "
        "condition that failed; null when it matches or is not subscribed.",
    )
    reason = serializers.CharField(allow_null=True, help_text="What failed, in words.")


class EndpointHeadersSerializer(serializers.Serializer):
    headers = serializers.DictField(
        child=serializers.CharField(), help_text="The custom headers, values in clear."
    )


def credentials(secret: str | None) -> dict[str, str | None]:
    """What a consumer verifies with: an HMAC endpoint's `whsec_` secret, or an Ed25519
    endpoint's `whpk_` public key (its private key never leaves the service)."""
    public = signing.public_key(secret) if secret else None
    return {"secret": None if public else secret, "public_key": public}


class EndpointCreatedSerializer(EndpointSerializer):
    """The answer to create: the endpoint and, this once, what to verify its requests with."""

    secret = serializers.CharField(read_only=True, allow_null=True, help_text="whsec_... (HMAC)")
    public_key = serializers.CharField(
        read_only=True, allow_null=True, help_text="whpk_... (Ed25519)"
    )

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "secret", "public_key"]


class EndpointSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(
        read_only=True, allow_null=True, help_text="whsec_... (the newest secret; HMAC endpoints)"
    )
    public_key = serializers.CharField(
        read_only=True, allow_null=True, help_text="whpk_... (the newest key; Ed25519 endpoints)"
    )

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return credentials(instance)


class SecretRotateSerializer(StrictFields, serializers.Serializer):
    grace_seconds = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=30 * 24 * 3600,
        help_text="How long the current secret keeps signing (default: the server's setting).",
    )


class SecretRotatedSerializer(serializers.Serializer):
    secret = serializers.CharField(
        allow_null=True, help_text="the new whsec_... secret; shown only this once"
    )
    public_key = serializers.CharField(
        allow_null=True, help_text="the new whpk_... public key (Ed25519 endpoints)"
    )
    previous_expire_at = serializers.DateTimeField(
        allow_null=True, help_text="when the replaced secret stops signing"
    )


class EndpointEnableSerializer(StrictFields, serializers.Serializer):
    replay_missed = serializers.BooleanField(
        default=False,
        help_text="Also replay the endpoint's waiting dead letters and send the events accepted "
        "while it was disabled.",
    )


class EndpointEnabledSerializer(serializers.Serializer):
    endpoint = EndpointSerializer()
    was_disabled = serializers.BooleanField()
    replayed = serializers.IntegerField(help_text="Dead letters put back to pending.")
    backfilled = serializers.IntegerField(
        help_text="Deliveries created for events missed while disabled; the sweeper sends them."
    )


class SentTestEventSerializer(serializers.Serializer):
    event = serializers.CharField(help_text="the webhook.test event's id (its webhook-id)")
    delivery = serializers.IntegerField(help_text="the delivery to follow in deliveries/")


class AuditRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditRecord
        fields = [
            "id",
            "at",
            "actor",
            "action",
            "object_type",
            "object_id",
            "application",
            "before",
            "after",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields


class AuditRecordFilterSerializer(serializers.Serializer):
    object_type = serializers.CharField(required=False, max_length=50)
    object_id = serializers.CharField(required=False, max_length=64)
    action = serializers.CharField(required=False, max_length=100)
    actor = serializers.CharField(required=False, max_length=200)
    since = serializers.DateTimeField(required=False, help_text="records at or after this")
    until = serializers.DateTimeField(required=False, help_text="records before this")
