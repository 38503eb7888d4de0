"""Beat job: forget portal sessions that ended or expired a day ago, and links that can no longer
open anything (expired or revoked, with no session left) after WEBHOOKS_RETENTION_DAYS. The
audit log keeps their history."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .models import PortalAccess, PortalSession


@shared_task(acks_late=True, ignore_result=True)
def portal_prune() -> dict[str, int]:
    now = timezone.now()
    day_ago = now - timedelta(days=1)
    sessions, _ = PortalSession.objects.filter(
        Q(expires_at__lt=day_ago) | Q(ended_at__lt=day_ago)
    ).delete()
    kept_until = now - timedelta(days=settings.WEBHOOKS_RETENTION_DAYS)
    accesses, _ = (
        PortalAccess.objects.filter(Q(expires_at__lt=kept_until) | Q(revoked_at__lt=kept_until))
        .filter(sessions__isnull=True)
        .delete()
    )
    return {"sessions": sessions, "accesses": accesses}
