"""Indexes for the API's cursor pages (newest first, by type, application, endpoint, status).

Built CONCURRENTLY (not in a transaction), so an installation with a month of rows keeps taking
events while they build; then the single-column foreign-key indexes they lead with are dropped.
"""

import django.db.models.deletion
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("deliveries", "0006_attempts_lost"),
        ("schemas_app", "0006_webhook_test_event_type"),
        ("webhooks", "0011_audit_record_application"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="deadletter",
            index=models.Index(
                condition=models.Q(("replayed_at__isnull", True)),
                fields=["-id"],
                name="dead_letter_newest_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="deadletter",
            index=models.Index(
                condition=models.Q(("replayed_at__isnull", True)),
                fields=["endpoint", "-id"],
                name="dead_letter_ep_newest_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="delivery",
            index=models.Index(fields=["endpoint", "-id"], name="delivery_endpoint_newest_idx"),
        ),
        AddIndexConcurrently(
            model_name="delivery",
            index=models.Index(fields=["status", "-id"], name="delivery_status_newest_idx"),
        ),
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(fields=["event_type", "-id"], name="event_type_newest_idx"),
        ),
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(fields=["application", "-id"], name="event_app_newest_idx"),
        ),
        migrations.AlterField(
            model_name="delivery",
            name="endpoint",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="deliveries",
                to="webhooks.endpoint",
            ),
        ),
        migrations.AlterField(
            model_name="event",
            name="application",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="events",
                to="webhooks.application",
            ),
        ),
        migrations.AlterField(
            model_name="event",
            name="event_type",
            field=models.ForeignKey(
                db_column="type",
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="events",
                to="schemas_app.eventtype",
                to_field="name",
            ),
        ),
    ]
