"""Register the operational event type `webhook.test`, sent to one endpoint on request."""

from django.db import migrations
from django.utils import timezone

# A frozen copy: migrations must not change when webhooks/operational.py does.
SCHEMA = {
    "type": "object",
    "required": ["endpoint_id", "message", "sent_at"],
    "properties": {
        "endpoint_id": {"type": "string"},
        "message": {"type": "string"},
        "sent_by": {"type": "string"},
        "sent_at": {"type": "string", "format": "date-time"},
    },
}
DESCRIPTION = (
    "Operational: a test event sent to one endpoint on request, to check that it receives and "
    "verifies deliveries. Never fanned out."
)


def register(apps, schema_editor):
    EventType = apps.get_model("schemas_app", "EventType")
    SchemaVersion = apps.get_model("schemas_app", "SchemaVersion")
    event_type, created = EventType.objects.get_or_create(
        name="webhook.test", defaults={"description": DESCRIPTION}
    )
    if created:
        SchemaVersion.objects.create(
            event_type=event_type, version=1, schema=SCHEMA, created_at=timezone.now()
        )


class Migration(migrations.Migration):
    dependencies = [("schemas_app", "0005_masking")]

    operations = [migrations.RunPython(register, migrations.RunPython.noop)]
