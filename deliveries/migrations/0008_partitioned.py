"""Events, deliveries and attempts become day-partitioned tables (deliveries.services.partitions).

The tables are rebuilt in place, in one transaction: the old ones are renamed, partitioned ones
made with the same columns, every row copied, the indexes built on the new ones, the old ones
dropped. Writers wait for it (ACCESS EXCLUSIVE on the three tables), so it is downtime: about
a second per 100,000 deliveries with their attempts on a small machine (see README,
"Upgrading"). Existing events go to their days' partitions; existing deliveries and attempts
keep their ids in a `legacy` partition that retention drops once everything in it has expired.
Idempotency keys move to their own table, which keeps them unique per application.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import deliveries.models

EPOCH_UNIX_DAY = 20089  # 2025-01-01, partitions.EPOCH
DAY_SHIFT = 39  # partitions.DAY_SHIFT; (day << 39) is where a day's delivery ids start

RENAME_AND_CREATE = f"""
ALTER TABLE deliveries_event RENAME TO deliveries_event_old;
ALTER TABLE deliveries_delivery RENAME TO deliveries_delivery_old;
ALTER TABLE deliveries_deliveryattempt RENAME TO deliveries_deliveryattempt_old;
ALTER SEQUENCE IF EXISTS deliveries_delivery_id_seq RENAME TO deliveries_delivery_id_seq_old;
ALTER SEQUENCE IF EXISTS deliveries_deliveryattempt_id_seq
    RENAME TO deliveries_deliveryattempt_id_seq_old;

CREATE TABLE deliveries_event (
    id varchar(40) COLLATE "C" NOT NULL,
    data jsonb NOT NULL,
    idempotency_key varchar(200),
    occurred_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    application_id bigint,
    type varchar(200) NOT NULL,
    schema_version_id bigint,
    request_hash varchar(64) NOT NULL
) PARTITION BY RANGE (id);
CREATE TABLE deliveries_event_default PARTITION OF deliveries_event DEFAULT;

CREATE SEQUENCE deliveries_delivery_id_seq;
CREATE TABLE deliveries_delivery (
    id bigint NOT NULL DEFAULT
        ((floor(extract(epoch FROM clock_timestamp()) / 86400)::bigint - {EPOCH_UNIX_DAY})
          << {DAY_SHIFT}) + nextval('deliveries_delivery_id_seq'),
    status varchar(16) NOT NULL,
    attempt_count smallint NOT NULL CHECK (attempt_count >= 0),
    next_attempt_at timestamptz,
    lease_expires_at timestamptz,
    last_attempt_at timestamptz,
    last_status_code smallint CHECK (last_status_code >= 0),
    completed_at timestamptz,
    created_at timestamptz NOT NULL,
    endpoint_id varchar(40) NOT NULL,
    event_id varchar(40) COLLATE "C" NOT NULL,
    dispatched_at timestamptz,
    retry_base smallint NOT NULL CHECK (retry_base >= 0)
) PARTITION BY RANGE (id);
ALTER SEQUENCE deliveries_delivery_id_seq OWNED BY deliveries_delivery.id;
CREATE TABLE deliveries_delivery_default PARTITION OF deliveries_delivery DEFAULT;
CREATE TABLE deliveries_delivery_legacy PARTITION OF deliveries_delivery
    FOR VALUES FROM (MINVALUE) TO ({1 << DAY_SHIFT});

CREATE SEQUENCE deliveries_deliveryattempt_id_seq;
CREATE TABLE deliveries_deliveryattempt (
    id bigint NOT NULL DEFAULT nextval('deliveries_deliveryattempt_id_seq'),
    number smallint NOT NULL CHECK (number >= 0),
    outcome varchar(16) NOT NULL,
    started_at timestamptz NOT NULL,
    duration_ms double precision NOT NULL,
    status_code smallint CHECK (status_code >= 0),
    error varchar(500) NOT NULL,
    error_class varchar(40) NOT NULL,
    request_headers jsonb NOT NULL,
    response_headers jsonb NOT NULL,
    response_body text NOT NULL,
    delivery_id bigint NOT NULL,
    request_body text NOT NULL,
    request_body_bytes integer CHECK (request_body_bytes >= 0)
) PARTITION BY RANGE (delivery_id);
ALTER SEQUENCE deliveries_deliveryattempt_id_seq OWNED BY deliveries_deliveryattempt.id;
CREATE TABLE deliveries_deliveryattempt_default PARTITION OF deliveries_deliveryattempt DEFAULT;
CREATE TABLE deliveries_deliveryattempt_legacy PARTITION OF deliveries_deliveryattempt
    FOR VALUES FROM (MINVALUE) TO ({1 << DAY_SHIFT});
"""

COPY_AND_INDEX = """
INSERT INTO deliveries_event (id, data, idempotency_key, occurred_at, created_at, application_id,
                              type, schema_version_id, request_hash)
SELECT id, data, idempotency_key, occurred_at, created_at, application_id, type,
       schema_version_id, request_hash FROM deliveries_event_old;
INSERT INTO deliveries_delivery (id, status, attempt_count, next_attempt_at, lease_expires_at,
        last_attempt_at, last_status_code, completed_at, created_at, endpoint_id, event_id,
        dispatched_at, retry_base)
SELECT id, status, attempt_count, next_attempt_at, lease_expires_at, last_attempt_at,
       last_status_code, completed_at, created_at, endpoint_id, event_id, dispatched_at,
       retry_base FROM deliveries_delivery_old;
INSERT INTO deliveries_deliveryattempt (id, number, outcome, started_at, duration_ms, status_code,
        error, error_class, request_headers, response_headers, response_body, delivery_id,
        request_body, request_body_bytes)
SELECT id, number, outcome, started_at, duration_ms, status_code, error, error_class,
       request_headers, response_headers, response_body, delivery_id, request_body,
       request_body_bytes FROM deliveries_deliveryattempt_old;
SELECT setval('deliveries_delivery_id_seq',
              (SELECT coalesce(max(id), 0) + 1 FROM deliveries_delivery_old), false);
SELECT setval('deliveries_deliveryattempt_id_seq',
              (SELECT coalesce(max(id), 0) + 1 FROM deliveries_deliveryattempt_old), false);
INSERT INTO deliveries_idempotencykey (application_id, key, event_id, created_at)
SELECT application_id, idempotency_key, id, created_at FROM deliveries_event_old
 WHERE idempotency_key IS NOT NULL;

ALTER TABLE deliveries_deadletter
    DROP CONSTRAINT IF EXISTS deliveries_deadlette_delivery_id_fed5801f_fk_deliverie;
DROP TABLE deliveries_deliveryattempt_old;
DROP TABLE deliveries_delivery_old;
DROP TABLE deliveries_event_old;

ALTER TABLE deliveries_event ADD CONSTRAINT deliveries_event_pkey PRIMARY KEY (id);
CREATE INDEX event_type_newest_idx ON deliveries_event (type, id DESC);
CREATE INDEX event_app_newest_idx ON deliveries_event (application_id, id DESC);
CREATE INDEX deliveries_event_created_at_06b1cb86 ON deliveries_event (created_at);
CREATE INDEX deliveries_event_schema_version_id_f4e6cb92 ON deliveries_event (schema_version_id);
ALTER TABLE deliveries_event ADD CONSTRAINT deliveries_event_application_id_7f4db7a5_fk_webhooks_
    FOREIGN KEY (application_id) REFERENCES webhooks_application (id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE deliveries_event ADD CONSTRAINT deliveries_event_schema_version_id_f4e6cb92_fk_schemas_a
    FOREIGN KEY (schema_version_id) REFERENCES schemas_app_schemaversion (id)
    DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE deliveries_event ADD CONSTRAINT deliveries_event_type_f8f7991c_fk_schemas_app_eventtype_name
    FOREIGN KEY (type) REFERENCES schemas_app_eventtype (name) DEFERRABLE INITIALLY DEFERRED;

ALTER TABLE deliveries_delivery ADD CONSTRAINT deliveries_delivery_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX deliveries_delivery_default_event_endpoint
    ON deliveries_delivery_default (event_id, endpoint_id);
CREATE UNIQUE INDEX deliveries_delivery_legacy_event_endpoint
    ON deliveries_delivery_legacy (event_id, endpoint_id);
CREATE INDEX delivery_due_idx ON deliveries_delivery (next_attempt_at) WHERE status = 'pending';
CREATE INDEX delivery_lease_idx ON deliveries_delivery (lease_expires_at)
    WHERE status = 'in_flight';
CREATE INDEX delivery_endpoint_status_idx ON deliveries_delivery (endpoint_id, status);
CREATE INDEX delivery_status_done_idx ON deliveries_delivery (status, completed_at);
CREATE INDEX delivery_endpoint_newest_idx ON deliveries_delivery (endpoint_id, id DESC);
CREATE INDEX delivery_status_newest_idx ON deliveries_delivery (status, id DESC);
ALTER TABLE deliveries_delivery ADD CONSTRAINT deliveries_delivery_endpoint_id_76a728d2_fk_webhooks_
    FOREIGN KEY (endpoint_id) REFERENCES webhooks_endpoint (id) DEFERRABLE INITIALLY DEFERRED;

ALTER TABLE deliveries_deliveryattempt
    ADD CONSTRAINT attempt_delivery_number UNIQUE (delivery_id, number);
CREATE INDEX attempt_started_idx ON deliveries_deliveryattempt (started_at);
CREATE INDEX attempt_id_idx ON deliveries_deliveryattempt (id);
ANALYZE deliveries_event;
ANALYZE deliveries_delivery;
ANALYZE deliveries_deliveryattempt;
"""


def make_days(apps, schema_editor):
    """A partition per day from the oldest event's day to WEBHOOKS_PARTITIONS_AHEAD ahead."""
    from datetime import UTC, timedelta

    from django.utils import timezone

    from deliveries.services.partitions import create_day, partitions_ensure

    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT min(created_at) FROM deliveries_event_old")
        oldest = cursor.fetchone()[0]
    today = timezone.now().astimezone(UTC).date()
    day = oldest.astimezone(UTC).date() if oldest else today
    while day < today:
        create_day(day)
        day += timedelta(days=1)
    partitions_ensure(today=today)


class Migration(migrations.Migration):
    dependencies = [
        ("deliveries", "0007_list_indexes"),
        ("webhooks", "0011_audit_record_application"),
    ]

    operations = [
        migrations.CreateModel(
            name="IdempotencyKey",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(max_length=200)),
                ("event_id", models.CharField(db_collation="C", db_index=True, max_length=40)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "application",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="webhooks.application",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("application", "key"),
                        name="idempotency_key_unique",
                        nulls_distinct=False,
                    )
                ]
            },
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(RENAME_AND_CREATE),
                migrations.RunPython(make_days),
                migrations.RunSQL(COPY_AND_INDEX),
            ],
            state_operations=[
                migrations.RemoveConstraint(model_name="delivery", name="delivery_event_endpoint"),
                migrations.RemoveConstraint(
                    model_name="event", name="event_idempotency_key_unique"
                ),
                migrations.AlterField(
                    model_name="deadletter",
                    name="delivery",
                    field=models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="dead_letters",
                        to="deliveries.delivery",
                    ),
                ),
                migrations.AlterField(
                    model_name="delivery",
                    name="event",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deliveries",
                        to="deliveries.event",
                    ),
                ),
                migrations.AlterField(
                    model_name="delivery",
                    name="id",
                    field=models.BigAutoField(primary_key=True, serialize=False),
                ),
                migrations.AlterField(
                    model_name="deliveryattempt",
                    name="delivery",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempts",
                        to="deliveries.delivery",
                    ),
                ),
                migrations.AlterField(
                    model_name="event",
                    name="id",
                    field=models.CharField(
                        db_collation="C",
                        default=deliveries.models._event_id,
                        editable=False,
                        max_length=40,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                migrations.AddIndex(
                    model_name="deliveryattempt",
                    index=models.Index(fields=["id"], name="attempt_id_idx"),
                ),
            ],
        ),
    ]
