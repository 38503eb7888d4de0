"""Portal links and the sessions opened with them. Tokens and session keys are stored as their
SHA-256 only: a database dump opens nothing."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from webhooks.models import Application
from webhooks_project.identifiers import new_id


def _access_id() -> str:
    return new_id("pa")


class PortalAccess(models.Model):
    """A one-time link to one application's portal: its token opens one session, once, before
    `expires_at`; revoking it also ends the session it opened."""

    class Rights(models.TextChoices):
        READ = "read", "read: see endpoints, deliveries and attempts"
        MANAGE = "manage", "manage: also create, change and delete endpoints, resend, replay"

    id = models.CharField(primary_key=True, max_length=40, default=_access_id, editable=False)
    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="portal_accesses"
    )
    rights = models.CharField(max_length=10, choices=Rights.choices, default=Rights.READ)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.CharField(max_length=200, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(help_text="the link works until then, once")
    session_seconds = models.PositiveIntegerField(help_text="how long the session it opens lasts")
    used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["application", "-created_at"], name="portal_access_app_idx")
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.application_id}, {self.rights})"

    @property
    def manage(self) -> bool:
        return self.rights == self.Rights.MANAGE


class PortalSession(models.Model):
    """The session a link opened: the browser holds its key in a cookie."""

    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    access = models.ForeignKey(PortalAccess, on_delete=models.CASCADE, related_name="sessions")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="portal_session_expiry_idx")]

    def __str__(self) -> str:
        return f"session of {self.access_id}"
