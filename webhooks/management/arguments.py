"""What the management commands share: reading an `--application UID` option."""

from __future__ import annotations

from django.core.management.base import CommandError

from webhooks.models import Application


def application_option(uid: str | None) -> Application | None:
    """The application named by an `--application` option (None without it)."""
    if not uid:
        return None
    try:
        return Application.objects.get(uid=uid)
    except Application.DoesNotExist as exc:
        raise CommandError(f"no application {uid!r}") from exc
