"""Reads for endpoints, secrets and API keys."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from webhooks_project import generation
from webhooks_project.pointers import escape_pointer_token

from . import crypto, subscriptions
from .filters import Filter, FilterError, Miss, compile_filter
from .models import Endpoint, EndpointSecret
from .operational import OPERATIONAL_EVENT_TYPES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subscriber:
    """An endpoint that gets events of a type, and the condition on their data, if any."""

    endpoint_id: str
    condition: Filter | None = None  # its `filter` and its `filters[type]`, both must hold
    channels: frozenset[str] = frozenset()  # it gets only events sent on one of these, if any
    ordered: bool = False  # ordering "per_key": a key's events one at a time, in order

    def reached(self, channels: Collection[str] | None, aimed: Collection[str] | None) -> bool:
        """Whether an event sent on `channels` and aimed at `aimed` (None: not aimed) can reach
        this endpoint at all: aimed at it, if aimed, and on one of its channels, if it has."""
        if aimed is not None and self.endpoint_id not in aimed:
            return False
        return subscriptions.on_channels(self.channels, channels)

    def wants(self, data: Any) -> bool:
        """Whether its filters let the event's data through (what the metrics count)."""
        return self.condition is None or self.condition.matches(data)


def endpoint_condition(common: Any, filters: Any, event_type: str) -> Filter | None:
    """One condition of an endpoint's `filter` and its `filters[event_type]`, both to hold; a
    miss points into the endpoint (`/filter/...`, `/filters/<type>/...`). Saved filters were
    checked; one that no longer compiles (a limit lowered since) matches nothing, logged."""
    per_type = (filters or {}).get(event_type)
    parts = []
    try:
        if common:
            parts.append(compile_filter(common, "/filter"))
        if per_type:
            parts.append(compile_filter(per_type, "/filters/" + escape_pointer_token(event_type)))
    except FilterError as exc:
        logger.error("a stored filter does not compile (%s); its endpoint gets nothing", exc)
        return compile_filter({"$not": {}})
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]

    def both(data: Any) -> Miss | None:
        return parts[0].explain(data) or parts[1].explain(data)

    return Filter(source={"filter": common, "filters": per_type}, explain=both)


def event_subscribers(*, event_type: str, application_id: int | None) -> list[Subscriber]:
    """The enabled endpoints that must receive an event of `event_type` for `application_id`,
    with their conditions on its data (webhooks/filters.py).

    An event for an application goes only to that application's endpoints; one without an
    application goes only to endpoints without one. An empty `event_types` subscribes to all
    business events, and so do wildcards that match (webhooks/subscriptions.py); operational
    events go only to endpoints that list them by name. Kept per process until the
    configuration changes (webhooks_project.generation).
    """

    def load() -> list[Subscriber]:
        listed = Q(event_types__contains=[event_type])
        if event_type not in OPERATIONAL_EVENT_TYPES:
            patterns = subscriptions.patterns_for(event_type)
            listed |= Q(event_types=[])
            # endpoints listing a pattern that matches (the GIN index finds them)
            listed |= Q(event_types__overlap=patterns) if patterns is not None else Q()
        rows = (
            Endpoint.objects.filter(enabled=True, application_id=application_id)  # type: ignore[misc]  # =None is IS NULL; the stubs refuse None
            .filter(listed)
            .values_list("id", "event_types", "filter", "filters", "channels", "ordering")
        )
        return [
            Subscriber(
                endpoint_id,
                endpoint_condition(common, per_type, event_type),
                frozenset(channels or ()),
                ordering == Endpoint.Ordering.PER_KEY,
            )
            for endpoint_id, types, common, per_type, channels, ordering in rows
            if subscriptions.subscribed(types, event_type, OPERATIONAL_EVENT_TYPES)
        ]

    return generation.cached(("subscribers", event_type, application_id), load)


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
