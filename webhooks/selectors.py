"""Reads for endpoints, secrets and API keys."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.utils import timezone

from webhooks_project import generation

from . import crypto
from .models import Endpoint, EndpointSecret
from .operational import OPERATIONAL_EVENT_TYPES


def endpoint_ids_for_event(*, event_type: str, application_id: int | None) -> list[str]:
    """Ids of enabled endpoints that must receive an event of `event_type` for `application_id`.

    An event for an application goes only to that application's endpoints; one without an
    application goes only to endpoints without one. An empty `event_types` subscribes to all
    business events; operational events go only to endpoints that list them.
    """

    def load() -> list[str]:
        subscribed = Q(event_types__contains=[event_type])
        if event_type not in OPERATIONAL_EVENT_TYPES:
            subscribed |= Q(event_types=[])
        return list(
            Endpoint.objects.filter(enabled=True, application_id=application_id)  # type: ignore[misc]  # =None is IS NULL; the stubs refuse None
            .filter(subscribed)
            .values_list("id", flat=True)
        )

    # per process until the configuration changes (webhooks_project.generation)
    return list(generation.cached(("endpoint_ids", event_type, application_id), load))


def endpoint_active_secrets(*, endpoint_id: str) -> list[str]:
    """Every secret of the endpoint that still signs, newest first."""
    now = timezone.now()
    return [
        crypto.decrypt(token)
        for token in EndpointSecret.objects.filter(endpoint_id=endpoint_id)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("-created_at")
        .values_list("secret", flat=True)
    ]


def endpoint_list() -> QuerySet[Endpoint]:
    """Endpoints with their application loaded."""
    return Endpoint.objects.select_related("application")
