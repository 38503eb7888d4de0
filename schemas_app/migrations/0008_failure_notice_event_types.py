"""Register the failure notices' operational event types: delivery.dead, endpoint.failing,
endpoint.recovered (issue 16)."""

from django.db import migrations
from django.utils import timezone

# Frozen copies: migrations must not change when webhooks/operational.py does.
_ENDPOINT = {
    "endpoint_id": {"type": "string"},
    "url": {"type": "string"},
    "application": {"type": ["string", "null"]},
}
TYPES = {
    "delivery.dead": (
        {
            "type": "object",
            "required": [
                "delivery_id", "event_id", "event_type", "endpoint_id", "attempts", "dead_at"
            ],
            "properties": {
                **_ENDPOINT,
                "delivery_id": {"type": "string"},
                "event_id": {"type": "string"},
                "event_type": {"type": "string"},
                "attempts": {"type": "integer"},
                "last_status_code": {"type": ["integer", "null"]},
                "reason": {"type": "string"},
                "dead_at": {"type": "string", "format": "date-time"},
                "suppressed": {"type": "integer"},
            },
            "additionalProperties": False,
        },
        "Operational: a delivery used up its attempts and waits as a dead letter. At most one a "
        "minute per endpoint; `suppressed` counts those not announced since the last one.",
    ),
    "endpoint.failing": (
        {
            "type": "object",
            "required": ["endpoint_id", "url", "failing_since", "threshold"],
            "properties": {
                **_ENDPOINT,
                "failing_since": {"type": "string", "format": "date-time"},
                "threshold": {"enum": ["started", "1h", "24h"]},
                "disabled_after": {"type": "string", "format": "date-time"},
            },
            "additionalProperties": False,
        },
        "Operational: an endpoint that was healthy started failing (threshold `started`), and is "
        "still failing after 1 h and after 24 h; `disabled_after` is when it will be disabled if "
        "nothing succeeds.",
    ),
    "endpoint.recovered": (
        {
            "type": "object",
            "required": ["endpoint_id", "url", "failing_since", "recovered_at"],
            "properties": {
                **_ENDPOINT,
                "failing_since": {"type": "string", "format": "date-time"},
                "recovered_at": {"type": "string", "format": "date-time"},
            },
            "additionalProperties": False,
        },
        "Operational: an endpoint that was failing answered with success again.",
    ),
}


def register(apps, schema_editor):
    EventType = apps.get_model("schemas_app", "EventType")
    SchemaVersion = apps.get_model("schemas_app", "SchemaVersion")
    for name, (schema, description) in TYPES.items():
        event_type, created = EventType.objects.get_or_create(
            name=name, defaults={"description": description}
        )
        if created:
            SchemaVersion.objects.create(
                event_type=event_type, version=1, schema=schema, created_at=timezone.now()
            )


class Migration(migrations.Migration):
    dependencies = [("schemas_app", "0007_event_type_retry_schedule")]

    operations = [migrations.RunPython(register, migrations.RunPython.noop)]
