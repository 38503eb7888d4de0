"""The audit log is append-only in PostgreSQL itself: a trigger refuses UPDATE and DELETE on
audit records, whoever sends them (the application's own code already refuses them)."""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION webhooks_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only (% refused on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_append_only
    BEFORE UPDATE OR DELETE ON webhooks_auditrecord
    FOR EACH ROW EXECUTE FUNCTION webhooks_audit_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS audit_append_only ON webhooks_auditrecord;
DROP FUNCTION IF EXISTS webhooks_audit_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0009_endpoint_rate_limit_help")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
