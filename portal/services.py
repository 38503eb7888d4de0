"""Portal links: made by an operator (API or admin), opened once by a partner, revoked at will.

A link carries a random token (256 bits); only its SHA-256 is stored. Opening it is a POST (the
link's page has one button): a mail scanner or chat preview that fetches the link cannot use it
up. The exchange marks the link used and opens a session in one transaction, so a token opens
one session however many browsers race for it. Every step is in the audit log.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import chain as audit
from webhooks.models import Application

from .models import PortalAccess, PortalSession

TOKEN_PREFIX = "wpt_"  # noqa: S105 - a prefix: a portal token in a log or chat is recognisable


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class NewAccess:
    access: PortalAccess
    token: str  # shown once: only its digest is kept


def _snapshot(access: PortalAccess) -> dict[str, object]:
    return {
        "application": access.application.uid,
        "rights": access.rights,
        "expires_at": access.expires_at.isoformat(),
        "session_seconds": access.session_seconds,
    }


@transaction.atomic
def access_create(
    *,
    application: Application,
    rights: str = PortalAccess.Rights.READ,
    expires_in: int | None = None,
    session_seconds: int | None = None,
    actor: str,
) -> NewAccess:
    """A one-time link to `application`'s portal; the token is in the answer only."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    access = PortalAccess.objects.create(
        application=application,
        rights=rights,
        token_hash=digest(token),
        created_by=actor[:200],
        created_at=now,
        expires_at=now + timedelta(seconds=expires_in or settings.WEBHOOKS_PORTAL_LINK_SECONDS),
        session_seconds=session_seconds or settings.WEBHOOKS_PORTAL_SESSION_SECONDS,
    )
    audit.record(
        actor=actor,
        action="portal_access.created",
        object_type="portal_access",
        object_id=access.id,
        after=_snapshot(access),
        application=application.uid,
    )
    return NewAccess(access=access, token=token)


class AccessRefused(Exception):
    """The token opens nothing: unknown, used, expired or revoked (one message for all)."""


@dataclass(frozen=True)
class Opened:
    session_key: str  # for the cookie; only its digest is kept
    session: PortalSession


@transaction.atomic
def access_redeem(*, token: str, client: str) -> Opened:
    """Exchange a link's token for a session (once). Raises AccessRefused."""
    now = timezone.now()
    access = (
        PortalAccess.objects.select_for_update()
        .select_related("application")
        .filter(token_hash=digest(token))
        .first()
    )
    if access is None or access.used_at or access.revoked_at or access.expires_at <= now:
        raise AccessRefused("This portal link is not valid: it was used, or it expired.")
    access.used_at = now
    access.save(update_fields=["used_at"])
    key = secrets.token_urlsafe(32)
    session = PortalSession.objects.create(
        key_hash=digest(key),
        access=access,
        created_at=now,
        expires_at=now + timedelta(seconds=access.session_seconds),
    )
    audit.record(
        actor=f"portal:{access.id}",
        action="portal_access.used",
        object_type="portal_access",
        object_id=access.id,
        after={**_snapshot(access), "client": client[:100]},
        application=access.application.uid,
    )
    return Opened(session_key=key, session=session)


@transaction.atomic
def access_revoke(*, access: PortalAccess, actor: str) -> PortalAccess:
    """The link stops working, and so does the session it opened (at its next request)."""
    if access.revoked_at is None:
        access.revoked_at = timezone.now()
        access.save(update_fields=["revoked_at"])
        PortalSession.objects.filter(access=access, ended_at__isnull=True).update(
            ended_at=access.revoked_at
        )
        audit.record(
            actor=actor,
            action="portal_access.revoked",
            object_type="portal_access",
            object_id=access.id,
            before=_snapshot(access),
            application=access.application.uid,
        )
    return access


def session_find(key: str | None) -> PortalSession | None:
    """The live session a cookie names: not ended, not expired, its link not revoked."""
    if not key:
        return None
    now = timezone.now()
    return (
        PortalSession.objects.select_related("access", "access__application")
        .filter(
            key_hash=digest(key),
            ended_at__isnull=True,
            expires_at__gt=now,
            access__revoked_at__isnull=True,
        )
        .first()
    )


def session_end(session: PortalSession) -> None:
    """Sign out."""
    PortalSession.objects.filter(pk=session.pk, ended_at__isnull=True).update(
        ended_at=timezone.now()
    )
