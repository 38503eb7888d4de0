"""The endpoint lifecycle in the engine: test events, disabling (by an operator, or
automatically with a notice), re-enabling with what was missed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from deliveries import metrics
from deliveries.models import DeadLetter, Delivery, Event
from schemas_app import payloads
from schemas_app.models import EventType
from webhooks import audit, crypto, subscriptions
from webhooks.models import Endpoint
from webhooks.operational import (
    ENDPOINT_DISABLED,
    ENDPOINT_DISABLED_DESCRIPTION,
    ENDPOINT_DISABLED_SCHEMA,
    OPERATIONAL_EVENT_TYPES,
    WEBHOOK_TEST,
    WEBHOOK_TEST_DESCRIPTION,
    WEBHOOK_TEST_SCHEMA,
)
from webhooks.selectors import Subscriber, endpoint_condition
from webhooks_project import generation

from . import ordering
from .dead_letters import dead_letters_replay
from .enqueue import FRESH_QUEUE, deliveries_enqueue
from .ingest import EventInput, IngestRejected, deliveries_insert, events_ingest
from .notices import notices_failing_thresholds, operational_type

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SentTestEvent:
    event_id: str
    delivery_id: int


class EndpointNotSendable(Exception):
    """The endpoint cannot receive a test event now (it is disabled)."""


def endpoint_send_test(*, endpoint_id: str, actor: str) -> SentTestEvent:
    """Send the operational `webhook.test` event to this one endpoint, like any delivery
    (signed, retried, recorded), without fanning it out to anyone else."""
    endpoint = Endpoint.objects.select_related("application").get(pk=endpoint_id)
    if not endpoint.enabled:
        raise EndpointNotSendable("the endpoint is disabled; enable it first")
    now = timezone.now()
    with transaction.atomic():
        version = operational_type(WEBHOOK_TEST, WEBHOOK_TEST_SCHEMA, WEBHOOK_TEST_DESCRIPTION)
        event = Event.objects.create(
            event_type_id=WEBHOOK_TEST,
            schema_version=version,
            application=endpoint.application,
            data={
                "endpoint_id": endpoint.pk,
                "message": "A test event from the webhook delivery service.",
                "sent_by": actor[:200],
                "sent_at": payloads.iso(now),
            },
            occurred_at=now,
            created_at=now,
        )
        (delivery_id,) = deliveries_insert(
            event_ids=[event.pk], endpoint_ids=[endpoint.pk], now=now
        ).ids
        transaction.on_commit(
            partial(deliveries_enqueue, delivery_ids=[delivery_id], queue=FRESH_QUEUE),
            robust=True,
        )
    return SentTestEvent(event_id=event.pk, delivery_id=delivery_id)


def _emit_endpoint_disabled(*, endpoint_id: str) -> None:
    """Ingest the operational event `endpoint.disabled` for the endpoint's application."""
    row = (
        Endpoint.objects.filter(pk=endpoint_id)
        .values("id", "url", "application__uid", "disabled_reason", "disabled_at", "failing_since")
        .get()
    )
    operational_type(ENDPOINT_DISABLED, ENDPOINT_DISABLED_SCHEMA, ENDPOINT_DISABLED_DESCRIPTION)
    data = {
        "endpoint_id": row["id"],
        "url": row["url"],
        "application": row["application__uid"],
        "reason": row["disabled_reason"],
        "disabled_at": payloads.iso(row["disabled_at"]),
        "failing_since": payloads.iso(row["failing_since"]),
    }
    try:
        events_ingest(
            items=[
                EventInput(
                    type=ENDPOINT_DISABLED,
                    data=data,
                    application=row["application__uid"],
                    idempotency_key=f"{ENDPOINT_DISABLED}:{row['id']}:{data['disabled_at']}",
                )
            ]
        )
    except IngestRejected as exc:  # someone changed its schema: the disabling itself stands
        logger.error("could not emit %s for %s: %s", ENDPOINT_DISABLED, endpoint_id, exc.errors)


@transaction.atomic
def endpoint_disable(*, endpoint_id: str, reason: str, actor: str = "system") -> bool:
    """Disable an endpoint (if enabled) and record why; returns whether it changed."""
    changed = Endpoint.objects.filter(pk=endpoint_id, enabled=True).update(
        enabled=False, disabled_reason=reason[:500], disabled_at=timezone.now()
    )
    if changed:
        generation.bump()  # it no longer gets events (a bulk update sends no signal)
        audit.record(
            actor=actor,
            action="endpoint.disabled",
            object_type="endpoint",
            object_id=endpoint_id,
            after={"enabled": False, "disabled_reason": reason[:500]},
        )
    return bool(changed)


def endpoint_disable_with_notice(*, endpoint_id: str, reason: str) -> bool:
    """Disable an endpoint automatically: record why and when, end its pending deliveries as
    `failed` (each with a dead letter), and emit `endpoint.disabled`. Returns whether it changed.
    """
    with transaction.atomic():
        if not endpoint_disable(endpoint_id=endpoint_id, reason=reason):
            return False
        deliveries_fail_for_endpoint(endpoint_id=endpoint_id, reason=reason)
        _emit_endpoint_disabled(endpoint_id=endpoint_id)
    logger.warning("endpoint %s disabled: %s", endpoint_id, reason)
    return True


def endpoints_disable_failing() -> list[str]:
    """Beat job: announce runs of failures that crossed a threshold (`endpoint.failing`), and
    disable each endpoint whose every attempt failed for WEBHOOKS_DISABLE_AFTER."""
    now = timezone.now()
    notices_failing_thresholds(now=now)
    cutoff = now - timedelta(seconds=settings.WEBHOOKS_DISABLE_AFTER)
    disabled = []
    for endpoint_id, since in Endpoint.objects.filter(
        enabled=True, failing_since__lt=cutoff
    ).values_list("id", "failing_since"):
        assert since is not None  # failing_since__lt excludes NULL
        hours = (now - since).total_seconds() / 3600
        reason = (
            f"every attempt failed since {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC "
            f"({hours:.1f} h)"
        )
        if endpoint_disable_with_notice(endpoint_id=endpoint_id, reason=reason):
            disabled.append(endpoint_id)
    return disabled


@dataclass(frozen=True)
class EnableResult:
    was_disabled: bool
    replayed: int  # dead letters put back to pending
    backfilled: int  # deliveries created for events accepted while the endpoint was disabled


def endpoint_enable(*, endpoint_id: str, actor: str, replay_missed: bool = False) -> EnableResult:
    """Re-enable an endpoint; with `replay_missed`, also send it what it missed.

    What it missed: its waiting dead letters (replayed with a fresh schedule), and the events
    it would have received while disabled (new deliveries, published by the sweeper).
    """
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint_id)
        disabled_at = None if endpoint.enabled else endpoint.disabled_at
        Endpoint.objects.filter(pk=endpoint_id).update(
            enabled=True, disabled_reason="", disabled_at=None, failing_since=None
        )
        generation.bump()  # it gets events again (a bulk update sends no signal)
        replayed = backfilled = 0
        if replay_missed:
            replayed = dead_letters_replay(
                dead_letters=DeadLetter.objects.filter(endpoint_id=endpoint_id), actor=actor
            ).replayed
            if disabled_at is not None:
                backfilled = _deliveries_backfill(endpoint=endpoint, since=disabled_at)
        audit.record(
            actor=actor,
            action="endpoint.enabled",
            object_type="endpoint",
            object_id=endpoint_id,
            before={"enabled": endpoint.enabled, "disabled_reason": endpoint.disabled_reason},
            after={
                "enabled": True,
                "replay_missed": replay_missed,
                "replayed": replayed,
                "backfilled": backfilled,
            },
        )
    return EnableResult(was_disabled=not endpoint.enabled, replayed=replayed, backfilled=backfilled)


def _deliveries_backfill(*, endpoint: Endpoint, since: datetime, batch_size: int = 1000) -> int:
    """Create deliveries for the events since `since` that the endpoint subscribes to and lacks.

    The rows are left undispatched: the sweeper publishes them in batches.
    """
    events = Event.objects.filter(
        created_at__gte=since,
        application_id=endpoint.application_id,  # type: ignore[misc]  # =None is IS NULL; the stubs refuse None
    )
    types = [
        name
        for name in EventType.objects.values_list("name", flat=True)
        if subscriptions.subscribed(endpoint.event_types, name, OPERATIONAL_EVENT_TYPES)
    ]
    events = events.filter(event_type_id__in=types)  # type: ignore[misc]  # the stubs type a string primary key's _id as int
    events = events.exclude(
        Exists(Delivery.objects.filter(event_id=OuterRef("pk"), endpoint_id=endpoint.pk))
    )
    passes = _routing_check(endpoint)
    now = timezone.now()
    created = 0
    batch: list[str] = []
    keys: list[str | None] = []
    ordered = endpoint.ordering == Endpoint.Ordering.PER_KEY
    # in the order they were accepted: an ordered endpoint gets each key's events in that order
    rows = events.order_by("created_at", "id").values_list(
        "id", "event_type_id", "data", "channels", "endpoints", "ordering_key"
    )
    for event_id, event_type, data, channels, aimed, key in rows.iterator(chunk_size=batch_size):
        # the stubs type a string key's _id as int
        if not passes(str(event_type), data, channels, aimed):
            continue
        batch.append(event_id)
        keys.append(key if ordered else None)
        if len(batch) == batch_size:
            created += _insert_undispatched(batch, keys, endpoint.pk, now)
            batch, keys = [], []
    if batch:
        created += _insert_undispatched(batch, keys, endpoint.pk, now)
    return created


def _routing_check(endpoint: Endpoint) -> Callable[[str, Any, Any, Any], bool]:
    """Whether an event the endpoint missed reaches it, judged as at ingest (`Subscriber`): its
    aim, its channels, and the endpoint's filters on the data as sent (sealed sensitive fields
    opened in memory for the check)."""
    sensitive = dict(EventType.objects.values_list("name", "sensitive_fields"))
    as_subscriber: dict[str, Subscriber] = {}

    def passes(event_type: str, data: Any, channels: Any, aimed: Any) -> bool:
        if event_type not in as_subscriber:
            as_subscriber[event_type] = Subscriber(
                endpoint.pk,
                endpoint_condition(endpoint.filter, endpoint.filters, event_type),
                frozenset(endpoint.channels or ()),
            )
        subscriber = as_subscriber[event_type]
        if not subscriber.reached(channels, aimed):
            return False
        if subscriber.condition is None:
            return True
        if sensitive.get(event_type):
            try:
                data = payloads.unseal(data, sensitive[event_type], crypto.decrypt)
            except crypto.SecretUnreadable:
                logger.warning("an event of type %s cannot be unsealed to filter it", event_type)
                return False
        return subscriber.wants(data)

    return passes


def endpoint_ordering_changed(*, endpoint: Endpoint, on_dead_before: str) -> None:
    """After an endpoint was saved: if `ordering_on_dead` changed, its keys are settled again
    (to skip: the keys a dead letter held move on; to block: the ones behind a dead letter
    wait)."""
    if endpoint.ordering_on_dead != on_dead_before:
        ordering.endpoint_keys_settle(endpoint_id=endpoint.pk)


def _insert_undispatched(
    event_ids: list[str], keys: list[str | None], endpoint_id: str, now: datetime
) -> int:
    inserted = deliveries_insert(
        event_ids=event_ids,
        endpoint_ids=[endpoint_id] * len(event_ids),
        now=now,
        dispatched=False,
        skip_existing=True,
        ordering_keys=keys,
    )
    return len(inserted.ids)


def deliveries_fail_for_endpoint(*, endpoint_id: str, reason: str) -> int:
    """End every pending delivery of a disabled endpoint as `failed`, each with a dead letter.

    In-flight ones are left to finish: their attempt sees the endpoint disabled next time.
    """
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(endpoint_id=endpoint_id, status=Delivery.Status.PENDING)
            .values_list("id", "event__event_type_id", "last_status_code")
        )
        Delivery.objects.filter(id__in=[r[0] for r in rows]).update(
            status=Delivery.Status.FAILED,
            completed_at=now,
            next_attempt_at=None,
            dispatched_at=None,
        )
        DeadLetter.objects.bulk_create(
            DeadLetter(
                delivery_id=delivery_id,
                endpoint_id=endpoint_id,
                event_type=event_type,
                reason=f"endpoint disabled: {reason}"[:500],
                last_status_code=status_code,
                created_at=now,
            )
            for delivery_id, event_type, status_code in rows
        )
        deltas = metrics.Deltas()
        for _, event_type, _ in rows:
            delta = deltas.of(endpoint_id, event_type)  # type: ignore[arg-type]  # the stubs type a string primary key's _id as int
            delta.failed += 1
            delta.dead_lettered += 1
        metrics.stats_add(deltas, at=now)
    return len(rows)
