"""Register the operational event type `endpoint.disabled`, so endpoints can subscribe to it."""

from django.db import migrations
from django.utils import timezone

# A frozen copy: migrations must not change when webhooks/operational.py does.
SCHEMA = {
    "type": "object",
    "required": ["endpoint_id", "url", "reason", "disabled_at"],
    "properties": {
        "endpoint_id": {"type": "string"},
        "url": {"type": "string"},
        "application": {"type": ["string", "null"]},
        "reason": {"type": "string"},
        "disabled_at": {"type": "string", "format": "date-time"},
        "failing_since": {"type": ["string", "null"], "format": "date-time"},
    },
    "additionalProperties": False,
}
DESCRIPTION = (
    "Operational: an endpoint was disabled automatically (410 Gone, or every attempt failed for "
    "WEBHOOKS_DISABLE_AFTER). Sent only to endpoints that subscribe to it by name."
)


def register(apps, schema_editor):
    EventType = apps.get_model("schemas_app", "EventType")
    SchemaVersion = apps.get_model("schemas_app", "SchemaVersion")
    event_type, created = EventType.objects.get_or_create(
        name="endpoint.disabled", defaults={"description": DESCRIPTION}
    )
    if created:
        SchemaVersion.objects.create(
            event_type=event_type, version=1, schema=SCHEMA, created_at=timezone.now()
        )


class Migration(migrations.Migration):
    dependencies = [("schemas_app", "0001_initial")]

    operations = [migrations.RunPython(register, migrations.RunPython.noop)]
