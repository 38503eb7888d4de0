"""Failure notices: operational events the service sends about delivery health, before
anything is disabled (Svix's `message.attempt.exhausted` and `message.attempt.failing`).

- `delivery.dead`: a delivery used up its attempts. At most one per endpoint per
  `WEBHOOKS_NOTICE_INTERVAL` seconds (a storm of failures sends a bounded number), each saying how
  many were `suppressed` since the last; the dead letters hold every one of them. Deliveries of
  operational events never cause one (a notice that dies must not announce itself).
- `endpoint.failing`: an endpoint's run of failures started, and again once it has lasted 1 h
  and 24 h (`FAILING_THRESHOLDS`; the health beat job checks those).
- `endpoint.recovered`: a failing endpoint answered with success.

They fan out like any event of their endpoint's application, to endpoints that list them by
name. Each carries an idempotency key, so emitting one twice (a retried batch, two beat runs)
stores it once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.utils import timezone

from schemas_app import payloads
from schemas_app.models import EventType, SchemaVersion
from webhooks.models import Endpoint
from webhooks.operational import (
    DELIVERY_DEAD,
    ENDPOINT_FAILING,
    ENDPOINT_RECOVERED,
    FAILING_THRESHOLDS,
    NOTICE_SCHEMAS,
    OPERATIONAL_EVENT_TYPES,
)
from webhooks_project.process_local import ProcessLocal

from .ingest import EventInput, IngestRejected, events_ingest

logger = logging.getLogger(__name__)

_redis = ProcessLocal(
    lambda: redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
)


def operational_type(name: str, schema: dict[str, Any], description: str) -> SchemaVersion:
    """The current version of an operational event type (its migration registers it; this
    covers a database flushed since)."""
    event_type, created = EventType.objects.get_or_create(
        name=name, defaults={"description": description}
    )
    if created:
        SchemaVersion.objects.create(event_type=event_type, version=1, schema=schema)
    version = event_type.versions.order_by("-version").first()
    assert version is not None
    return version


def _endpoints(ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    rows = Endpoint.objects.filter(pk__in=set(ids)).values("id", "url", "application__uid")
    return {
        row["id"]: {
            "endpoint_id": row["id"],
            "url": row["url"],
            "application": row["application__uid"],
        }
        for row in rows
    }


def _emit(name: str, items: list[tuple[dict[str, Any], str]]) -> None:
    """Ingest notices of type `name`: (data, idempotency key) each, for the data's
    application. A schema changed by hand so that a notice no longer fits is logged; the
    change that caused the notice stands."""
    if not items:
        return
    operational_type(name, *NOTICE_SCHEMAS[name])
    try:
        events_ingest(
            items=[
                EventInput(
                    type=name, data=data, application=data["application"], idempotency_key=key
                )
                for data, key in items
            ]
        )
    except IngestRejected as exc:
        logger.error("could not emit %s: %s", name, exc.errors)


@dataclass(frozen=True)
class DeadDelivery:
    delivery_id: int
    event_id: str
    event_type: str
    endpoint_id: str
    attempts: int
    last_status_code: int | None
    reason: str


def _take_turn(endpoint_id: str) -> int | None:
    """This endpoint's turn to announce a dead delivery: the number suppressed since its last
    notice, or None when it announced one less than WEBHOOKS_NOTICE_INTERVAL ago (counted as
    suppressed). Redis away: None (bounded, logged; the dead letter is there all the same)."""
    client = _redis.get()
    turn = f"webhooks:notice:dead:{endpoint_id}"
    suppressed = f"webhooks:notice:dead-suppressed:{endpoint_id}"
    try:
        if client.set(turn, 1, nx=True, ex=settings.WEBHOOKS_NOTICE_INTERVAL):
            count = client.getdel(suppressed)
            return int(count or 0)
        with client.pipeline(transaction=False) as pipe:
            pipe.incr(suppressed)
            pipe.expire(suppressed, 7 * 24 * 3600)
            pipe.execute()
    except (redis.RedisError, OSError) as exc:
        logger.warning("delivery.dead notice for %s not sent (Redis: %s)", endpoint_id, exc)
    return None


def notices_delivery_dead(dead: list[DeadDelivery], *, at: datetime) -> None:
    """Announce deliveries that used up their attempts (rate-limited per endpoint)."""
    dead = [d for d in dead if d.event_type not in OPERATIONAL_EVENT_TYPES]
    if not dead:
        return
    endpoints = _endpoints(d.endpoint_id for d in dead)
    items = []
    for d in dead:
        if d.endpoint_id not in endpoints:
            continue
        suppressed = _take_turn(d.endpoint_id)
        if suppressed is None:
            continue
        data = {
            **endpoints[d.endpoint_id],
            "delivery_id": str(d.delivery_id),
            "event_id": d.event_id,
            "event_type": d.event_type,
            "attempts": d.attempts,
            "last_status_code": d.last_status_code,
            "reason": d.reason[:500],
            "dead_at": payloads.iso(at),
            "suppressed": suppressed,
        }
        items.append((data, f"{DELIVERY_DEAD}:{d.delivery_id}:{d.attempts}"))
    _emit(DELIVERY_DEAD, items)


def _emit_runs(
    name: str,
    runs: dict[str, datetime],
    fields: Callable[[datetime], dict[str, Any]],
    suffix: str = "",
) -> None:
    """Notices of type `name` about runs of failures (endpoint id -> when the run started),
    each with the endpoint, `failing_since` and `fields(since)`; keyed by run (and `suffix`)."""
    endpoints = _endpoints(runs)
    items = []
    for endpoint_id, since in runs.items():
        if endpoint_id in endpoints:
            data = {**endpoints[endpoint_id], "failing_since": payloads.iso(since), **fields(since)}
            items.append((data, f"{name}:{endpoint_id}:{data['failing_since']}{suffix}"))
    _emit(name, items)


def notices_endpoint_failing(runs: dict[str, datetime], threshold: str = "started") -> None:
    """Announce endpoints whose run of failures started at `runs[id]` (or crossed `threshold`)."""
    disable_after = timedelta(seconds=settings.WEBHOOKS_DISABLE_AFTER)
    _emit_runs(
        ENDPOINT_FAILING,
        runs,
        lambda since: {
            "threshold": threshold,
            "disabled_after": payloads.iso(since + disable_after),
        },
        suffix=f":{threshold}",
    )


def notices_endpoint_recovered(runs: dict[str, datetime], *, at: datetime) -> None:
    """Announce endpoints whose run of failures (started at `runs[id]`) ended at `at`."""
    _emit_runs(ENDPOINT_RECOVERED, runs, lambda since: {"recovered_at": payloads.iso(at)})


def notices_failing_thresholds(*, now: datetime | None = None) -> int:
    """Beat (with the health job): announce each run of failures that has crossed a threshold
    since it started; the idempotency keys make a second run of this send nothing new."""
    now = now or timezone.now()
    sent = 0
    for name, seconds in FAILING_THRESHOLDS:
        if seconds >= settings.WEBHOOKS_DISABLE_AFTER:
            continue  # disabled before: `endpoint.disabled` says it
        runs = dict(
            Endpoint.objects.filter(
                enabled=True, failing_since__lte=now - timedelta(seconds=seconds)
            ).values_list("id", "failing_since")
        )
        notices_endpoint_failing(runs, threshold=name)  # type: ignore[arg-type]  # failing_since__lte excludes NULL
        sent += len(runs)
    return sent
