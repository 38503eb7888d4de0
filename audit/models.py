"""The audit record: append-only in the ORM and, by a trigger, in PostgreSQL."""

from __future__ import annotations

from django.db import models


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs: object) -> int:
        raise TypeError("audit records are append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("audit records are append-only")


class AuditRecord(models.Model):
    """One configuration change: who, what, on which object, the non-secret fields before and
    after. Append-only; each record carries the hash of the one before it (audit/chain.py),
    so a changed or removed record shows (`manage.py verify_audit_chain`)."""

    at = models.DateTimeField()
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=64)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    # the application the changed object belongs to ("": shared or none), so a key limited to
    # an application reads its own records; not part of the hash
    application = models.CharField(max_length=64, blank=True, default="", db_index=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        # The webhooks app's table, migrations, admin URL and permissions, as before the model
        # moved down here: only the code moved, so that every app can audit its changes.
        app_label = "webhooks"
        ordering = ["-id"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object_idx")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_id}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise TypeError("audit records are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise TypeError("audit records are append-only")
