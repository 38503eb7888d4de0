"""Event types and the versioned JSON Schemas their events are checked against."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

event_type_name_validator = RegexValidator(
    r"^[a-zA-Z0-9_\-]+(\.[a-zA-Z0-9_\-]+)*$",
    "Use dot-separated words of letters, digits, '_' or '-', e.g. order.created.",
)


class EventType(models.Model):
    """A kind of business event, e.g. `order.created`; its name is its public key."""

    name = models.CharField(max_length=200, unique=True, validators=[event_type_name_validator])
    description = models.TextField(blank=True, default="")
    archived = models.BooleanField(default=False)
    example = models.JSONField(
        null=True, blank=True, help_text="an example `data`, valid against the current schema"
    )
    transform = models.JSONField(
        null=True,
        blank=True,
        help_text="mapping from an event's data to the payload sent (schemas_app/transform.py)",
    )
    output_schema = models.JSONField(
        null=True, blank=True, help_text="JSON Schema every payload must match before it is sent"
    )
    masking = models.JSONField(
        null=True,
        blank=True,
        help_text="rules applied to every payload after transformation (schemas_app/masking.py)",
    )
    sensitive_fields = models.JSONField(
        default=list,
        blank=True,
        help_text="JSON pointers into an event's data whose values are stored encrypted",
    )
    # Between the global WEBHOOKS_RETRY_SCHEDULE and an endpoint's own (which wins).
    retry_schedule = ArrayField(
        models.PositiveIntegerField(),
        null=True,
        blank=True,
        help_text="delays in seconds before each retry of this type's deliveries; empty: the "
        "default (an endpoint's own schedule wins over it)",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SchemaVersion(models.Model):
    """One version of an event type's JSON Schema (Draft 2020-12); versions are never edited."""

    event_type = models.ForeignKey(EventType, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    schema = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.CharField(max_length=200, blank=True, default="")
    # breaking changes against the previous version, saved with `allow_breaking` (else empty)
    changes = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["event_type", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["event_type", "version"], name="schema_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.event_type_id} v{self.version}"
