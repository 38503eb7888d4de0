"""Ingestion: validate events against their schemas and store them with one delivery per
subscribed endpoint, all or nothing, enqueued after commit."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import orjson
from django.db import IntegrityError, transaction
from django.utils import timezone

from deliveries import metrics
from deliveries.models import Delivery, Event, IdempotencyKey
from deliveries.partition_keys import DAY_SHIFT, DELIVERY_SEQUENCE, event_day
from schemas_app import payloads
from schemas_app.selectors import schema_version_current
from schemas_app.validation import validate
from webhooks import crypto, subscriptions
from webhooks.models import Application, Endpoint
from webhooks.selectors import Subscriber, event_subscribers
from webhooks_project import generation, tracing
from webhooks_project.db import binding_cursor

from . import ordering
from .enqueue import FRESH_QUEUE, deliveries_enqueue


@dataclass(frozen=True)
class EventInput:
    """One event as a source posted it, already shaped by the API serializer."""

    type: str
    data: Any
    application: str | None = None
    idempotency_key: str | None = None
    occurred_at: datetime | None = None
    channels: tuple[str, ...] | None = None  # sent on these channels
    endpoints: tuple[str, ...] | None = None  # aimed at these endpoints only
    ordering_key: str | None = None  # ordered endpoints get a key's events in turn


@dataclass(frozen=True)
class IngestResult:
    """The stored event, how many deliveries it has, and whether this call created it."""

    event: Event
    delivery_count: int
    created: bool


class IdempotencyConflict(Exception):
    """An idempotency key was used before with a different body; nothing was stored."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(f"{len(errors)} idempotency conflict(s)")
        self.errors = errors


def request_hash(item: EventInput) -> str:
    """The fingerprint of what a request asked for under its idempotency key."""
    occurred = item.occurred_at.isoformat() if item.occurred_at else None
    document = {"type": item.type, "data": item.data, "occurred_at": occurred}
    # only when given: a key used before routing existed keeps its fingerprint
    if item.channels is not None:
        document["channels"] = list(item.channels)
    if item.endpoints is not None:
        document["endpoints"] = list(item.endpoints)
    if item.ordering_key is not None:
        document["ordering_key"] = item.ordering_key
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


class IngestRejected(Exception):
    """Nothing was stored: `errors` lists each problem with a JSON pointer into the request."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(f"{len(errors)} problem(s) in the events")
        self.errors = errors


def _application(uid: str) -> Application | None:
    return Application.objects.filter(uid=uid).first()


def _pointer_prefix(index: int | None) -> str:
    return "" if index is None else f"/{index}"


def _check_inputs(
    items: Sequence[EventInput], *, single: bool, only_application: str | None
) -> tuple[dict, dict]:
    """Validate every item; returns (schema versions by type, applications by uid) or raises."""
    errors: list[dict[str, str]] = []
    versions = {name: schema_version_current(name=name) for name in {i.type for i in items}}
    uids = {i.application for i in items if i.application}
    if only_application is not None:
        uids &= {only_application}  # any other is unknown to this caller
    applications = {
        uid: app
        for uid in uids
        if (
            app := generation.cached(
                ("application", uid), partial(_application, uid), cache_none=False
            )
        )
    }
    targets = _target_applications(items)
    for index, item in enumerate(items):
        prefix = _pointer_prefix(None if single else index)
        version = versions.get(item.type)
        if version is None:
            errors.append(
                {
                    "pointer": f"{prefix}/type",
                    "detail": f"Unknown event type {item.type!r}: register it under "
                    "/api/v1/event-types/ first.",
                    "code": "unknown_event_type",
                }
            )
        else:
            for violation in validate(
                item.data,
                version.schema,
                # versions are immutable rows: the row id names this exact schema for good
                cache_key=(version.event_type.name, version.pk),
            ):
                errors.append(
                    {
                        "pointer": f"{prefix}/data{violation.pointer}",
                        "detail": violation.detail,
                        "keyword": violation.keyword,
                        "code": "schema_violation",
                    }
                )
        if item.application and item.application not in applications:
            errors.append(
                {
                    "pointer": f"{prefix}/application",
                    "detail": f"Unknown application {item.application!r}.",
                    "code": "unknown_application",
                }
            )
        errors += _routing_problems(item, prefix, applications, targets)
    if errors:
        raise IngestRejected(errors)
    return versions, applications


def _target_applications(items: Sequence[EventInput]) -> dict[str, int | None]:
    """The application of every endpoint an item aims at (one query for the batch)."""
    wanted = {e for item in items for e in item.endpoints or ()}
    if not wanted:
        return {}
    return dict(Endpoint.objects.filter(id__in=wanted).values_list("id", "application_id"))


def _routing_problems(
    item: EventInput, prefix: str, applications: dict[str, Application], targets: dict
) -> list[dict[str, str]]:
    """Channels well formed; each endpoint aimed at exists in the event's application (one of
    another application is unknown here, like one that does not exist)."""
    problems = []
    for i, channel in enumerate(item.channels or ()):
        if not subscriptions.CHANNEL.fullmatch(channel):
            problems.append(
                {
                    "pointer": f"{prefix}/channels/{i}",
                    "detail": "A channel is 1 to 128 letters, digits, and _ . : -",
                    "code": "invalid",
                }
            )
    app = applications.get(item.application) if item.application else None
    for i, endpoint_id in enumerate(item.endpoints or ()):
        if endpoint_id not in targets or targets[endpoint_id] != (app.pk if app else None):
            problems.append(
                {
                    "pointer": f"{prefix}/endpoints/{i}",
                    "detail": f"Unknown endpoint {endpoint_id!r}"
                    + (f" of application {app.uid!r}." if app else " (of no application)."),
                    "code": "unknown_endpoint",
                }
            )
    return problems


def events_ingest(
    *, items: Sequence[EventInput], single: bool = False, only_application: str | None = None
) -> list[IngestResult]:
    """Validate and store events with one Delivery per matching endpoint, all or nothing.

    Each event is checked against its type's current schema; any problem rejects the whole call
    and nothing is stored. A repeated idempotency key returns the stored event and fans out
    nothing new. The deliveries are enqueued after commit; if the broker is down they wait as
    `pending` rows for the sweeper. With `only_application` (a key limited to it), an item naming
    any other application is refused as naming an unknown one.
    """
    with tracing.span("webhooks.ingest", attributes={"webhooks.events": len(items)}) as span:
        versions, applications = _check_inputs(
            items, single=single, only_application=only_application
        )
        try:
            results = _store(items, versions, applications, single)
        except IntegrityError:
            # Another request stored the same idempotency key between our lookup and insert;
            # its row is committed now, so a second pass finds it and returns it.
            results = _store(items, versions, applications, single)
        if span is not None:
            span.set_attribute("webhooks.deliveries", sum(r.delivery_count for r in results))
        return results


@transaction.atomic
def _store(
    items: Sequence[EventInput],
    versions: dict,
    applications: dict[str, Application],
    single: bool = False,
) -> list[IngestResult]:
    now = timezone.now()
    # each event keeps the ingest span's context: its deliveries' attempts join this trace
    traceparent = tracing.traceparent()
    keys = {i.idempotency_key for i in items if i.idempotency_key}
    stored: dict[tuple[int | None, str], Event] = {}
    if keys:
        used = list(
            IdempotencyKey.objects.filter(key__in=keys).values_list(
                "application_id", "key", "event_id"
            )
        )
        earlier_events = Event.objects.in_bulk([event_id for _, _, event_id in used])
        for application_id, key_text, event_id in used:
            if event_id in earlier_events:
                stored[(application_id, key_text)] = earlier_events[event_id]
    # plan: (event, created) per item, in order; a key repeated in one batch makes one event
    plan: list[tuple[Event, bool]] = []
    new_events: list[Event] = []
    incoming: dict[str, Any] = {}
    conflicts: list[dict[str, str]] = []
    for index, item in enumerate(items):
        app = applications[item.application] if item.application else None
        key = (app.pk if app else None, item.idempotency_key) if item.idempotency_key else None
        fingerprint = request_hash(item) if key is not None else ""
        if key is not None and key in stored:
            earlier = stored[key]
            # events stored before fingerprints were kept have none: they cannot conflict
            if earlier.request_hash and earlier.request_hash != fingerprint:
                conflicts.append(
                    {
                        "pointer": f"{_pointer_prefix(None if single else index)}/idempotency_key",
                        "detail": f"idempotency_key {item.idempotency_key!r} was already used "
                        f"for event {earlier.id} with a different body; use a new key for a "
                        "new event, or send exactly the same body to get that event back.",
                        "code": "idempotency_conflict",
                        "event": earlier.id,
                    }
                )
            plan.append((earlier, False))
            continue
        sensitive = versions[item.type].event_type.sensitive_fields
        event = Event(
            event_type_id=item.type,
            schema_version=versions[item.type],
            application=app,
            # sensitive fields are stored encrypted: no dump, log or admin page shows them
            data=payloads.seal(item.data, sensitive, crypto.encrypt) if sensitive else item.data,
            idempotency_key=item.idempotency_key,
            request_hash=fingerprint,
            occurred_at=item.occurred_at or now,
            created_at=now,
            channels=list(item.channels) if item.channels is not None else None,
            endpoints=list(item.endpoints) if item.endpoints is not None else None,
            ordering_key=item.ordering_key,
            traceparent=traceparent,
        )
        new_events.append(event)
        incoming[event.id] = item.data  # filters read the data as sent, never the sealed copy
        if key is not None:
            stored[key] = event
        plan.append((event, True))
    if conflicts:
        raise IdempotencyConflict(conflicts)
    events_insert(new_events)
    # a concurrent request that took one of these keys makes this raise IntegrityError
    IdempotencyKey.objects.bulk_create(
        IdempotencyKey(
            application_id=event.application_id,
            key=event.idempotency_key,
            event_id=event.id,
            created_at=now,
        )
        for event in new_events
        if event.idempotency_key
    )

    event_ids: list[str] = []
    endpoint_ids: list[str] = []
    ordering_keys: list[str | None] = []
    counts: dict[str, int] = {}
    targets: dict[tuple[str, int | None], list[Subscriber]] = {}
    filtered = metrics.Deltas()
    for event in new_events:
        combo = (event.event_type_id, event.application_id)
        if combo not in targets:
            targets[combo] = event_subscribers(event_type=combo[0], application_id=combo[1])
        chosen = []
        aimed = set(event.endpoints) if event.endpoints is not None else None
        for subscriber in targets[combo]:
            if not subscriber.reached(event.channels, aimed):
                continue  # not a filter's doing: not counted
            if subscriber.wants(incoming[event.id]):
                chosen.append(subscriber)
            else:
                filtered.of(subscriber.endpoint_id, combo[0]).filtered += 1
        event_ids.extend([event.id] * len(chosen))
        endpoint_ids.extend(sub.endpoint_id for sub in chosen)
        # an ordered endpoint gets the events of a key in turn; one without a key, at once
        order_key = event.ordering_key
        ordering_keys.extend(order_key if sub.ordered else None for sub in chosen)
        counts[event.id] = len(chosen)
    if filtered:
        transaction.on_commit(partial(_count_filtered, filtered, now), robust=True)
    delivery_ids = deliveries_insert(
        event_ids=event_ids, endpoint_ids=endpoint_ids, now=now, ordering_keys=ordering_keys
    ).ready
    if delivery_ids:
        transaction.on_commit(partial(_publish, delivery_ids), robust=True)

    results = []
    for event, created in plan:
        count = counts.get(event.id)
        if count is None:  # stored by an earlier request
            count = Delivery.objects.of_events([event.id]).count()
        results.append(IngestResult(event=event, delivery_count=count, created=created))
    return results


def _publish(delivery_ids: list[int]) -> None:
    """After commit: the fresh deliveries to the feed (a message carries this trace)."""
    with tracing.span(
        "webhooks.publish",
        kind=tracing.SpanKind.PRODUCER,
        attributes={"webhooks.deliveries": len(delivery_ids)},
    ):
        deliveries_enqueue(delivery_ids=delivery_ids, queue=FRESH_QUEUE)


def _count_filtered(deltas: metrics.Deltas, at: datetime) -> None:
    """Count what filters kept back, after the events committed, in a transaction of its own
    that does not wait for the WAL flush. Inside the ingest transaction, the rollup rows every
    concurrent request adds to stayed locked through its commit: requests queued on them (a
    type whose filters let half through was slower to ingest than one without filters). A
    database crash may lose the last moments of these counts, never an event or a delivery."""
    with transaction.atomic(), binding_cursor() as cursor:
        cursor.execute("SELECT set_config('synchronous_commit', 'off', true)")
        metrics.stats_add(deltas, at=at)


def _array_text(values: list[str] | None) -> str | None:
    """A PostgreSQL array literal of the strings (each quoted and escaped), or None."""
    if values is None:
        return None
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def events_insert(events: Sequence[Event]) -> None:
    """Insert the events in one statement of array parameters (the ORM's `bulk_create` built
    and bound a row of nine parameters per event: a fifth of a batch's time in the web). The
    data goes as JSON text, encoded once here."""
    if not events:
        return
    columns = (
        "id",
        "type",
        "schema_version_id",
        "application_id",
        "data",
        "idempotency_key",
        "request_hash",
        "occurred_at",
        "created_at",
        "channels",
        "endpoints",
        "ordering_key",
    )
    # the traceparent column only while tracing: otherwise one more array of nulls to bind
    traced = any(e.traceparent for e in events)
    with binding_cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Event._meta.db_table}
                   ({", ".join(columns)}{", traceparent" if traced else ""})
            SELECT id, type, version, app, data::jsonb, key, hash, occurred, created,
                   channels::varchar[], endpoints::varchar[], ordering_key
                   {", traceparent" if traced else ""}
              FROM unnest(%s::varchar[], %s::varchar[], %s::bigint[], %s::bigint[], %s::text[],
                          %s::varchar[], %s::varchar[], %s::timestamptz[], %s::timestamptz[],
                          %s::text[], %s::text[], %s::varchar[]
                          {", %s::varchar[]" if traced else ""})
                   AS t(id, type, version, app, data, key, hash, occurred, created,
                        channels, endpoints, ordering_key{", traceparent" if traced else ""})
            """,  # noqa: S608 - the names are ours, every value is a parameter
            [
                [e.id for e in events],
                [e.event_type_id for e in events],
                [e.schema_version_id for e in events],
                [e.application_id for e in events],
                [orjson.dumps(e.data).decode() for e in events],
                [e.idempotency_key for e in events],
                [e.request_hash for e in events],
                [e.occurred_at for e in events],
                [e.created_at for e in events],
                # arrays of arrays cannot be unnested: each list goes as its array's text
                [_array_text(e.channels) for e in events],
                [_array_text(e.endpoints) for e in events],
                [e.ordering_key for e in events],
                *([[e.traceparent for e in events]] if traced else []),
            ],
        )
    for event in events:  # as bulk_create leaves them: saved
        event._state.adding = False


@dataclass(frozen=True)
class Inserted:
    """Deliveries inserted, and those of them to publish now (ordered ones wait their turn)."""

    ids: list[int]
    ready: list[int]


def deliveries_insert(
    *,
    event_ids: list[str],
    endpoint_ids: list[str],
    now: datetime,
    dispatched: bool = True,
    skip_existing: bool = False,
    ordering_keys: list[str | None] | None = None,
) -> Inserted:
    """Insert one pending Delivery per (event, endpoint) pair in one statement; returns the ids,
    and those to publish (all but the ordered ones, whose heads are published on commit).

    Each id carries its event's day, which puts it in that day's partition (services.partitions).
    Two array parameters instead of a row of parameters per delivery: a fan-out of thousands
    binds and plans in a fraction of the time `bulk_create` takes. `dispatched=False` leaves the
    rows for the sweeper to publish; `skip_existing` skips pairs that already have a delivery.
    `ordering_keys` (parallel, None where unordered): deliveries to ordered endpoints, which
    take their key's next sequences and wait for their turn (services.ordering); must run in
    a transaction.
    """
    if not event_ids:
        return Inserted([], [])
    days: dict[str, int] = {}
    for event_id in event_ids:
        if event_id not in days:
            days[event_id] = event_day(event_id)
    keys = ordering_keys if ordering_keys and any(k is not None for k in ordering_keys) else None
    sequences: list[int | None] = [None] * len(event_ids)
    if keys is not None:
        ordered = [i for i, k in enumerate(keys) if k is not None]
        taken = ordering.sequences_take(
            pairs=[(endpoint_ids[i], keys[i]) for i in ordered],  # type: ignore[misc]  # not None here
            now=now,
        )
        for i, sequence in zip(ordered, taken, strict=True):
            sequences[i] = sequence
    with binding_cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Delivery._meta.db_table}
                   (id, event_id, endpoint_id, status, attempt_count, retry_base,
                    next_attempt_at, dispatched_at, created_at, ordering_key, sequence)
            SELECT (t.day << {DAY_SHIFT}) + nextval('{DELIVERY_SEQUENCE}'),
                   t.event_id, t.endpoint_id, 'pending', 0, 0,
                   CASE WHEN t.key IS NULL THEN %(now)s END,
                   CASE WHEN t.key IS NULL THEN %(dispatched)s::timestamptz END,
                   %(now)s, t.key, t.sequence
              FROM unnest(%(events)s::varchar[], %(endpoints)s::varchar[], %(days)s::bigint[],
                          %(keys)s::varchar[], %(sequences)s::bigint[])
                   AS t(event_id, endpoint_id, day, key, sequence)
            {"ON CONFLICT DO NOTHING" if skip_existing else ""}
            RETURNING id, ordering_key IS NULL
            """,  # noqa: S608 - the names are ours, every value is a parameter
            {
                "events": event_ids,
                "endpoints": endpoint_ids,
                "days": [days[event_id] for event_id in event_ids],
                "keys": keys if keys is not None else [None] * len(event_ids),
                "sequences": sequences,
                "now": now,
                "dispatched": now if dispatched else None,
            },
        )
        rows = cursor.fetchall()
    if keys is not None:
        # the heads of keys with nothing before them go now (published after commit); each
        # key's deliveries are read from the day of the first made here on
        lows: dict[tuple[str, str], int] = {}
        for i, k in enumerate(keys):
            if k is not None:
                low = days[event_ids[i]] << DAY_SHIFT
                lows[(endpoint_ids[i], k)] = min(lows.get((endpoint_ids[i], k), low), low)
        ordering.keys_settle(lows, now=now, lows=lows)
    return Inserted(
        ids=[delivery_id for delivery_id, _ in rows],
        ready=[delivery_id for delivery_id, unordered in rows if unordered],
    )
