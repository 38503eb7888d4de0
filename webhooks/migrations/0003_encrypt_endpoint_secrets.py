"""Endpoint secrets encrypted at rest: every plaintext `whsec_` row becomes a Fernet token."""

from django.db import migrations, models


def encrypt_plaintext(apps, schema_editor):
    from webhooks import crypto

    EndpointSecret = apps.get_model("webhooks", "EndpointSecret")
    for row in EndpointSecret.objects.filter(secret__startswith="whsec_").iterator():
        row.secret = crypto.encrypt(row.secret)
        row.save(update_fields=["secret"])


def decrypt_to_plaintext(apps, schema_editor):
    from webhooks import crypto

    EndpointSecret = apps.get_model("webhooks", "EndpointSecret")
    for row in EndpointSecret.objects.exclude(secret__startswith="whsec_").iterator():
        row.secret = crypto.decrypt(row.secret)
        row.save(update_fields=["secret"])


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0002_endpoint_health")]

    operations = [
        migrations.AlterField(
            model_name="endpointsecret",
            name="secret",
            field=models.CharField(help_text="encrypted; see webhooks/crypto.py", max_length=500),
        ),
        migrations.RunPython(encrypt_plaintext, decrypt_to_plaintext),
    ]
