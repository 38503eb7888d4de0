"""Writes of the delivery engine: ingest events with their deliveries, enqueue, attempt, record."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from schemas_app import payloads
from schemas_app.models import EventType, SchemaVersion
from schemas_app.selectors import schema_version_current
from schemas_app.validation import validate
from webhooks import audit, crypto, signing, transport
from webhooks.models import Application, Endpoint, EndpointSecret
from webhooks.operational import (
    ENDPOINT_DISABLED,
    ENDPOINT_DISABLED_DESCRIPTION,
    ENDPOINT_DISABLED_SCHEMA,
    OPERATIONAL_EVENT_TYPES,
    WEBHOOK_TEST,
    WEBHOOK_TEST_DESCRIPTION,
    WEBHOOK_TEST_SCHEMA,
)
from webhooks.selectors import endpoint_ids_for_event
from webhooks.services import check_target, endpoint_disable, max_request_seconds
from webhooks.ssrf import BlockedTarget, Target
from webhooks_project.db import binding_cursor
from webhooks_project.process_local import ProcessLocal

from . import metrics, ratelimit
from .backoff import Decision, Verdict, decide
from .models import DeadLetter, Delivery, DeliveryAttempt, Event
from .sender import Job, Sender

logger = logging.getLogger(__name__)
attempt_logger = logging.getLogger("deliveries.attempts")  # one record per attempt

REDACTED = "[redacted]"


# --- Ingestion ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventInput:
    """One event as a source posted it, already shaped by the API serializer."""

    type: str
    data: Any
    application: str | None = None
    idempotency_key: str | None = None
    occurred_at: datetime | None = None


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
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


class IngestRejected(Exception):
    """Nothing was stored: `errors` lists each problem with a JSON pointer into the request."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(f"{len(errors)} problem(s) in the events")
        self.errors = errors


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
    applications = {a.uid: a for a in Application.objects.filter(uid__in=uids)}
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
    if errors:
        raise IngestRejected(errors)
    return versions, applications


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
    versions, applications = _check_inputs(items, single=single, only_application=only_application)
    try:
        return _store(items, versions, applications, single)
    except IntegrityError:
        # Another request stored the same idempotency key between our lookup and insert; its
        # row is committed now, so a second pass finds it and returns it.
        return _store(items, versions, applications, single)


@transaction.atomic
def _store(
    items: Sequence[EventInput],
    versions: dict,
    applications: dict[str, Application],
    single: bool = False,
) -> list[IngestResult]:
    now = timezone.now()
    keys = {i.idempotency_key for i in items if i.idempotency_key}
    stored: dict[tuple[int | None, str], Event] = {}
    if keys:
        for event in Event.objects.filter(idempotency_key__in=keys):
            stored[(event.application_id, event.idempotency_key)] = event  # type: ignore[index]
    # plan: (event, created) per item, in order; a key repeated in one batch makes one event
    plan: list[tuple[Event, bool]] = []
    new_events: list[Event] = []
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
        )
        new_events.append(event)
        if key is not None:
            stored[key] = event
        plan.append((event, True))
    if conflicts:
        raise IdempotencyConflict(conflicts)
    Event.objects.bulk_create(new_events)

    event_ids: list[str] = []
    endpoint_ids: list[str] = []
    counts: dict[str, int] = {}
    targets: dict[tuple[str, int | None], list[str]] = {}
    for event in new_events:
        combo = (event.event_type_id, event.application_id)
        if combo not in targets:
            targets[combo] = endpoint_ids_for_event(event_type=combo[0], application_id=combo[1])
        event_ids.extend([event.id] * len(targets[combo]))
        endpoint_ids.extend(targets[combo])
        counts[event.id] = len(targets[combo])
    delivery_ids = _deliveries_insert(event_ids=event_ids, endpoint_ids=endpoint_ids, now=now)
    if delivery_ids:
        transaction.on_commit(
            lambda: deliveries_enqueue(delivery_ids=delivery_ids, queue=FRESH_QUEUE), robust=True
        )

    results = []
    for event, created in plan:
        count = counts.get(event.id)
        if count is None:  # stored by an earlier request
            count = event.deliveries.count()
        results.append(IngestResult(event=event, delivery_count=count, created=created))
    return results


def _deliveries_insert(
    *, event_ids: list[str], endpoint_ids: list[str], now: datetime
) -> list[int]:
    """Insert one pending Delivery per (event, endpoint) pair in one statement; returns the ids.

    Two array parameters instead of a row of parameters per delivery: a fan-out of thousands
    binds and plans in a fraction of the time `bulk_create` takes.
    """
    if not event_ids:
        return []
    with binding_cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Delivery._meta.db_table}
                   (event_id, endpoint_id, status, attempt_count, retry_base,
                    next_attempt_at, dispatched_at, created_at)
            SELECT t.event_id, t.endpoint_id, 'pending', 0, 0, %(now)s, %(now)s, %(now)s
              FROM unnest(%(events)s::varchar[], %(endpoints)s::varchar[])
                   AS t(event_id, endpoint_id)
            RETURNING id
            """,  # noqa: S608 - the table name is ours, every value is a parameter
            {"events": event_ids, "endpoints": endpoint_ids, "now": now},
        )
        return [row[0] for row in cursor.fetchall()]


FRESH_QUEUE = "deliveries"  # first attempts of new events, and replays
RETRY_QUEUE = "retries"  # retries, sweeps and deferrals: never ahead of fresh work


def deliveries_enqueue(
    *,
    delivery_ids: Sequence[int],
    countdown: float | None = None,
    batch_size: int | None = None,
    queue: str = RETRY_QUEUE,
) -> int:
    """Publish the ids in `deliver_batch` messages over one broker connection; returns how many
    ids were sent.

    Fresh work goes to the `deliveries` queue, everything else to `retries`: a worker takes
    from both in turn, so a backlog of retries or of a slow endpoint's deliveries never makes
    new events wait behind it.

    A broker outage is logged, not raised: the rows stay `pending` in PostgreSQL, which is the
    truth, and the `requeue_stuck` beat job enqueues them once the broker is back.
    """
    from .tasks import deliver_batch  # tasks import services; import here to keep the graph acyclic

    size = batch_size or settings.WEBHOOKS_BATCH_SIZE
    ids = list(delivery_ids)
    sent = 0
    try:
        with deliver_batch.app.producer_or_acquire() as producer:
            for start in range(0, len(ids), size):
                chunk = ids[start : start + size]
                deliver_batch.apply_async(
                    args=(chunk,), countdown=countdown, producer=producer, queue=queue
                )
                sent += len(chunk)
    except (KombuError, RedisError, OSError) as exc:
        logger.warning(
            "broker unavailable, %d of %d deliveries left pending for the sweeper: %s",
            len(ids) - sent,
            len(ids),
            exc,
        )
    return sent


# --- Delivery attempts --------------------------------------------------------------------------
#
# A `deliver_batch` task claims its due deliveries in one statement, builds and signs each body,
# and hands the requests to this process's Sender (deliveries/sender.py), which sends them on
# threads and calls `attempts_record` with finished jobs in batches: one transaction writes the
# attempt rows, moves every delivery to its next state, and files dead letters.


@dataclass(slots=True)
class Claim:
    """One delivery claimed for one attempt, with everything sending it needs."""

    delivery_id: int
    number: int
    retry_base: int
    event_id: str
    event_type: str
    occurred_at: datetime
    data: Any
    endpoint_id: str
    url: str
    enabled: bool
    headers: dict[str, str]
    timeout: float | None
    schedule: list[int] | None
    keys: list[signing.SigningKey] | None  # of every secret still valid, newest first;
    # None when the stored secret cannot be decrypted (its encryption key is gone)
    lease: datetime  # the claim's lease expiry (renewed while the sender holds the claim)
    claimed_at: datetime  # when it was claimed, as written in the row: this claim's token
    type_mapping: str | None = None  # JSON text: the event type's transformation
    endpoint_mapping: str | None = None  # JSON text: this endpoint's mapping for the type
    output_schema: str | None = None  # JSON text: what the payload must match
    type_masking: str | None = None  # JSON text: the type's masking rules
    endpoint_masking: str | None = None  # JSON text: this endpoint's rules for the type
    encryption_key: str | None = None  # JSON text: the endpoint's public JWK
    sensitive_fields: list[str] = field(default_factory=list)  # stored encrypted in `data`
    accepted_at: datetime | None = None  # when the event was accepted (latency is from here)
    rate_limit: int | None = None  # the endpoint's requests per second, if it has a limit


_D = Delivery._meta.db_table
_E = Event._meta.db_table
_P = Endpoint._meta.db_table

_S = EndpointSecret._meta.db_table
_T = EventType._meta.db_table

# One statement, one round trip, in autocommit. Rows are locked in id order and locked ones
# skipped, so two claims over overlapping ids never deadlock and never both win a row. Returns
# each claimed row joined with its event, its endpoint and the endpoint's signing secrets.
# The claim commits without waiting for the WAL flush (`synchronous_commit` off for this one
# transaction): if PostgreSQL crashed right after, the claim is forgotten and the delivery is
# sent again, a duplicate of the kind a crash always allows, never a loss. Events and attempt
# records keep synchronous commits. The claim that comes after a lost one has the same attempt
# number, so the claim time written here (`last_attempt_at`, written by nothing else) is what
# identifies a claim: renewing, recording and giving back match it, and a send of a lost claim
# is recorded under the next free number. The lease expiry is not the token: renewals move it.
_CLAIM_SQL = f"""
WITH cfg AS (SELECT set_config('synchronous_commit', 'off', true)),
due AS (
    SELECT id FROM {_D}
     WHERE id = ANY(%(ids)s) AND status = 'pending' AND next_attempt_at <= %(now)s
       AND endpoint_id <> ALL(%(skip)s)
     ORDER BY id
       FOR UPDATE SKIP LOCKED
)
UPDATE {_D} AS d
   SET status = 'in_flight', attempt_count = d.attempt_count + 1,
       lease_expires_at = %(lease)s, last_attempt_at = %(now)s
  FROM cfg, due, {_E} AS e, {_P} AS p, {_T} AS t
 WHERE d.id = due.id AND e.id = d.event_id AND p.id = d.endpoint_id AND t.name = e.type
RETURNING d.id, d.attempt_count, d.retry_base, e.id, e.type, e.occurred_at, e.data::text,
          p.id, p.url, p.enabled, p.headers::text, p.timeout_seconds, p.retry_schedule,
          ARRAY(SELECT s.secret FROM {_S} AS s
                 WHERE s.endpoint_id = p.id AND (s.expires_at IS NULL OR s.expires_at > %(now)s)
                 ORDER BY s.created_at DESC),
          t.transform::text, (p.transforms -> e.type)::text, t.output_schema::text,
          t.masking::text, (p.masking -> e.type)::text, p.encryption_key::text,
          t.sensitive_fields::text, e.created_at, p.rate_limit_per_second
"""  # noqa: S608 - table names are ours, every value is a parameter


def deliveries_claim(
    *, delivery_ids: Sequence[int], now: datetime, skip_endpoints: Sequence[str] = ()
) -> list[Claim]:
    """Claim the due `pending` deliveries among `delivery_ids` for one attempt each."""
    lease = now + timedelta(seconds=settings.WEBHOOKS_LEASE_SECONDS)
    with binding_cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            {"ids": list(delivery_ids), "now": now, "lease": lease, "skip": list(skip_endpoints)},
        )
        rows = cursor.fetchall()
    keys: dict[str, list[signing.SigningKey] | None] = {}  # decoded once per endpoint

    def signing_keys(endpoint_id: str, stored: list[str]) -> list[signing.SigningKey] | None:
        if endpoint_id not in keys:
            try:
                keys[endpoint_id] = [signing.signing_key(crypto.decrypt(x)) for x in stored]
            except crypto.SecretUnreadable:
                # claimed already: the attempt must end recorded, never stuck in flight
                logger.error("endpoint %s: no configured key decrypts its secret", endpoint_id)
                keys[endpoint_id] = None
        return keys[endpoint_id]

    return [
        Claim(
            delivery_id=r[0],
            number=r[1],
            retry_base=r[2],
            event_id=r[3],
            event_type=r[4],
            occurred_at=r[5],
            data=orjson.loads(r[6]),
            endpoint_id=r[7],
            url=r[8],
            enabled=r[9],
            headers=orjson.loads(r[10]) if r[10] else {},
            timeout=float(r[11]) if r[11] else None,
            schedule=r[12],
            keys=signing_keys(r[7], r[13]),
            lease=lease,
            claimed_at=now,
            type_mapping=r[14],
            endpoint_mapping=r[15],
            output_schema=r[16],
            type_masking=r[17],
            endpoint_masking=r[18],
            encryption_key=r[19],
            sensitive_fields=orjson.loads(r[20]) if r[20] else [],
            accepted_at=r[21],
            rate_limit=r[22],
        )
        for r in rows
    ]


def _reschedule_unclaimed(
    *, delivery_ids: set[int], now: datetime, skip_endpoints: Sequence[str]
) -> None:
    """Ids a message named but the claim skipped: already taken (nothing to do), not yet due
    (publish again for when they are, if that is soon), or locked by a sweep (it publishes them).
    Deliveries to a paused endpoint stay as they are, untouched: the sweeper publishes them
    again (`WEBHOOKS_REDISPATCH_AFTER`, paced for a failing endpoint).
    """
    soon: dict[int, list[int]] = {}
    for delivery_id, due in (
        Delivery.objects.filter(id__in=delivery_ids, status=Delivery.Status.PENDING)
        .exclude(endpoint_id__in=skip_endpoints)
        .values_list("id", "next_attempt_at")
    ):
        wait = max(0.0, (due - now).total_seconds()) if due else 0.0
        if wait <= settings.WEBHOOKS_COUNTDOWN_MAX:
            soon.setdefault(math.ceil(wait) or 1, []).append(delivery_id)
    for countdown, ids in soon.items():
        deliveries_enqueue(delivery_ids=ids, countdown=countdown)


def deliveries_release(*, claims: Sequence[Claim], delay: float, publish: bool = False) -> None:
    """Give back claims that were not sent (the endpoint is slow or paused, or its lane is
    full): the attempt does not count. They are due again in `delay` seconds; published then
    by a countdown message (`publish`) or by the sweeper."""
    if not claims:
        return
    ids = [c.delivery_id for c in claims]
    due = timezone.now() + timedelta(seconds=delay)
    with binding_cursor() as cursor:
        # only rows this claim still holds: after its lease was taken back, the row may be
        # another claim's
        cursor.execute(
            f"""
            UPDATE {_D} AS d
               SET status = 'pending', attempt_count = d.attempt_count - 1,
                   lease_expires_at = NULL, next_attempt_at = %(due)s, dispatched_at = %(sent)s
              FROM unnest(%(ids)s::bigint[], %(claimed)s::timestamptz[]) AS v(id, claimed)
             WHERE d.id = v.id AND d.status = 'in_flight' AND d.last_attempt_at = v.claimed
            """,  # noqa: S608 - the table name is ours, every value is a parameter
            {
                "ids": ids,
                "claimed": [c.claimed_at for c in claims],
                "due": due,
                "sent": due if publish else None,
            },
        )
    if publish:
        deliveries_enqueue(delivery_ids=ids, countdown=delay)


def leases_renew(jobs: Sequence[Job]) -> set[int]:
    """Extend the lease of each claim still held (the sender's renewal thread): each row that
    this claim still holds (same claim time) gets a full lease from now.
    Returns the delivery ids whose row no longer holds the claim (taken back by the sweeper,
    or a claim a database crash forgot), which must not be sent. Only the expiry moves, so a
    renewal whose answer was lost (the database went away) leaves nothing to reconcile."""
    close_old_connections()  # this thread's connection may have broken with the database
    lease = timezone.now() + timedelta(seconds=settings.WEBHOOKS_LEASE_SECONDS)
    claims = [job.claim for job in jobs]
    with binding_cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {_D} AS d SET lease_expires_at = %(lease)s
              FROM unnest(%(ids)s::bigint[], %(claimed)s::timestamptz[]) AS v(id, claimed)
             WHERE d.id = v.id AND d.status = 'in_flight' AND d.last_attempt_at = v.claimed
            RETURNING d.id
            """,  # noqa: S608 - the table name is ours, every value is a parameter
            {"ids": [c.delivery_id for c in claims], "claimed": [c.claimed_at for c in claims]},
        )
        renewed = {row[0] for row in cursor.fetchall()}
    for claim in claims:
        if claim.delivery_id in renewed:
            claim.lease = lease
    return {c.delivery_id for c in claims} - renewed


def build_body(*, event_type: str, occurred_at: datetime, data: Any) -> bytes:
    """Serialize the standard payload once; these exact bytes are signed and sent."""
    return orjson.dumps({"type": event_type, "timestamp": _iso(occurred_at), "data": data})


def _new_sender() -> Sender:
    return Sender(
        record=attempts_record,
        renew=leases_renew,
        threads=settings.WEBHOOKS_SEND_THREADS,
        max_in_flight=settings.WEBHOOKS_MAX_IN_FLIGHT,
        endpoint_concurrency=settings.WEBHOOKS_ENDPOINT_CONCURRENCY,
        endpoint_queue=settings.WEBHOOKS_ENDPOINT_QUEUE,
        slow_after=settings.WEBHOOKS_SLOW_AFTER,
        breaker_threshold=settings.WEBHOOKS_BREAKER_THRESHOLD,
        breaker_cooldown=settings.WEBHOOKS_BREAKER_COOLDOWN,
        lease=settings.WEBHOOKS_LEASE_SECONDS,
        connect_timeout=settings.WEBHOOKS_CONNECT_TIMEOUT,
        max_response_bytes=settings.WEBHOOKS_RESPONSE_MAX_BYTES,
    )


# Each worker process (prefork child) builds its own sender, with its threads, after the fork.
_senders = ProcessLocal(_new_sender)


def current_sender() -> Sender | None:
    """This process's sender, if it has sent anything."""
    return _senders.current()


# Refusals of our own: no request was made, so they are not counted as HTTP attempts.
def _stored(job: Job) -> bytes:
    return job.stored_body if job.stored_body is not None else job.body


NOT_SENT = frozenset({"endpoint_disabled", "ssrf_blocked", "secret_unreadable", "payload_invalid"})


def _refused(job: Job, error_class: str, error: str) -> Job:
    job.started_at = time.time()
    job.result = transport.TransportResult(
        status_code=None, duration_ms=0.0, error=error[:500], error_class=error_class
    )
    return job


def _prepare(
    claim: Claim, *, sender: Sender, checked: dict[str, Target | BlockedTarget], timestamp: int
) -> Job | None:
    """The job for one claim, signed and ready to send; None when it ended here (refused and
    finished on the sender, e.g. SSRF, an unreadable secret, a payload that cannot be built)."""
    job = Job(claim=claim)
    custom = {str(k): str(v) for k, v in claim.headers.items()}
    job.headers = {
        **custom,
        "content-type": "application/json",
        "user-agent": settings.WEBHOOKS_USER_AGENT,
        "webhook-id": claim.event_id,
        "webhook-timestamp": str(timestamp),
    }
    job.stored_headers = {k: (REDACTED if k in custom else v) for k, v in job.headers.items()}
    if not claim.enabled:
        sender.finish(_refused(job, "endpoint_disabled", "endpoint is disabled"))
        return None
    if claim.url not in checked:
        try:
            checked[claim.url] = check_target(claim.url)
        except BlockedTarget as exc:
            checked[claim.url] = exc
    target = checked[claim.url]
    if isinstance(target, BlockedTarget):
        sender.finish(_refused(job, "ssrf_blocked", str(target)))
        return None
    if claim.keys is None:
        sender.finish(
            _refused(
                job,
                "secret_unreadable",
                "no key in WEBHOOKS_ENCRYPTION_KEYS decrypts this endpoint's secret",
            )
        )
        return None
    try:
        sealed: list[Any] = []  # the clear values of sealed fields, kept out of the attempt log
        clear = payloads.unseal(claim.data, claim.sensitive_fields, crypto.decrypt, sealed)
        payload = payloads.shape(
            event_type=claim.event_type,
            data=clear,
            type_mapping=claim.type_mapping,
            endpoint_mapping=claim.endpoint_mapping,
            output_schema=claim.output_schema,
            type_masking=claim.type_masking,
            endpoint_masking=claim.endpoint_masking,
            encryption_key=claim.encryption_key,
            hash_key=settings.WEBHOOKS_HASH_KEY,
        )
    except (payloads.PayloadRefused, crypto.SecretUnreadable) as exc:
        sender.finish(_refused(job, "payload_invalid", str(exc)))
        return None
    job.url = claim.url
    job.address = target.address
    job.body = build_body(event_type=claim.event_type, occurred_at=claim.occurred_at, data=payload)
    if sealed:
        # what the event seals, the attempt log seals too (the consumer gets it in clear)
        stored = payloads.without_sealed(payload, sealed)
        if stored != payload:
            job.stored_body = build_body(
                event_type=claim.event_type, occurred_at=claim.occurred_at, data=stored
            )
    job.headers["webhook-signature"] = signing.signature_header(
        claim.keys, claim.event_id, timestamp, job.body
    )
    job.timeout = _request_timeout(claim)
    return job


_capped: set[str] = set()  # endpoints already warned about, per process


def _request_timeout(claim: Claim) -> float:
    """The request's deadline: the endpoint's own, else WEBHOOKS_HTTP_TIMEOUT. An endpoint
    timeout saved under a longer lease than today's is held to what the lease covers (saving
    one longer is refused), with a warning once per process."""
    most = max_request_seconds()
    timeout = claim.timeout or settings.WEBHOOKS_HTTP_TIMEOUT
    if timeout > most:
        if claim.endpoint_id not in _capped:
            _capped.add(claim.endpoint_id)
            logger.warning(
                "endpoint %s: timeout_seconds %s is longer than WEBHOOKS_LEASE_SECONDS covers; "
                "its requests get %s s",
                claim.endpoint_id,
                claim.timeout,
                most,
            )
        return most
    return timeout


def deliveries_dispatch(*, delivery_ids: Sequence[int]) -> int:
    """Claim the due deliveries among `delivery_ids` and hand them to this process's sender.

    Returns how many were claimed. It does not wait for the answers: the sender records each
    attempt when it ends. Database errors propagate before anything is sent (the task retries).
    """
    close_old_connections()  # drop a broken or expired connection (Celery keeps them open)
    sender = _senders.get()
    ids = list(dict.fromkeys(delivery_ids))
    most = max(1, settings.WEBHOOKS_MAX_IN_FLIGHT // 2)
    if len(ids) > most:  # never wait for more slots than the process has
        return sum(
            deliveries_dispatch(delivery_ids=ids[i : i + most]) for i in range(0, len(ids), most)
        )
    sender.acquire(len(ids))  # blocks while this process has too much in flight
    try:
        now = timezone.now()
        # endpoints whose breaker is open in this process: not even claimed
        paused = sender.paused_endpoints()
        claims = deliveries_claim(delivery_ids=ids, now=now, skip_endpoints=paused)
        unclaimed = set(ids) - {c.delivery_id for c in claims}
        if unclaimed:
            _reschedule_unclaimed(delivery_ids=unclaimed, now=now, skip_endpoints=paused)
    except BaseException:
        sender.give_back(len(ids))
        raise
    sender.give_back(len(unclaimed))

    timestamp = int(time.time())
    lanes: dict[str, list[Job]] = {}
    checked: dict[str, Target | BlockedTarget] = {}  # each URL resolved and checked once
    for claim in claims:
        try:
            job = _prepare(claim, sender=sender, checked=checked, timestamp=timestamp)
        except Exception as exc:  # noqa: BLE001 - one poisoned claim must not take the batch
            # anything that fails while one claim is prepared ends that claim alone, recorded
            logger.exception("delivery %s could not be prepared", claim.delivery_id)
            job = None
            sender.finish(
                _refused(
                    Job(claim=claim),
                    "payload_invalid",
                    f"the payload could not be built ({type(exc).__name__})",
                )
            )
        if job is not None:
            lanes.setdefault(claim.endpoint_id, []).append(job)

    handed: list[Job] = []
    for endpoint_id, jobs in lanes.items():
        rate = jobs[0].claim.rate_limit
        if rate:
            grant = ratelimit.take(endpoint_id, rate, len(jobs))
            if grant.granted < len(jobs):
                _defer_over_rate(jobs[grant.granted :], grant=grant, rate=rate)
                sender.give_back(len(jobs) - grant.granted)
                jobs = jobs[: grant.granted]
                if not jobs:
                    continue
        admission = sender.admit(endpoint_id, jobs)
        handed.extend(jobs[: admission.taken])
        rest = jobs[admission.taken :]
        if rest:
            deliveries_release(
                claims=[j.claim for j in rest],
                delay=admission.defer,
                publish=admission.soon and admission.defer <= settings.WEBHOOKS_COUNTDOWN_MAX,
            )
            sender.give_back(len(rest))
    # busy until they have started (bounded): the next messages go to this worker's other
    # processes meanwhile, so every process's lanes are used (Sender.wait_started)
    sender.wait_started(handed, timeout=settings.WEBHOOKS_HANDOFF_WAIT)
    return len(claims)


def _defer_over_rate(jobs: Sequence[Job], *, grant: ratelimit.Grant, rate: int) -> None:
    """Give back claims over the endpoint's rate limit, each due at the slot promised to it (to
    a tenth of a second): soon ones ride on a countdown message, later ones wait for the
    sweeper."""
    due: dict[float, list[Claim]] = {}
    for job, delay in zip(jobs, ratelimit.due_in(grant, rate, len(jobs)), strict=True):
        due.setdefault(max(1, math.ceil(delay * 10)) / 10, []).append(job.claim)
    for delay, claims in due.items():
        deliveries_release(
            claims=claims, delay=delay, publish=delay <= settings.WEBHOOKS_COUNTDOWN_MAX
        )


# Plain strings (`.value`): psycopg would dump an Enum member as its name.
_OUTCOMES = {
    Verdict.SUCCEEDED: DeliveryAttempt.Outcome.SUCCEEDED.value,
    Verdict.RETRY: DeliveryAttempt.Outcome.RETRYING.value,
    Verdict.FAILED: DeliveryAttempt.Outcome.FAILED.value,
    Verdict.DEAD: DeliveryAttempt.Outcome.FAILED.value,
}
_FINAL_STATUS = {
    Verdict.SUCCEEDED: Delivery.Status.SUCCEEDED.value,
    Verdict.FAILED: Delivery.Status.FAILED.value,
    Verdict.DEAD: Delivery.Status.DEAD.value,
}

_ADVANCE_SQL = f"""
UPDATE {_D} AS d
   SET status = v.status, next_attempt_at = v.next_at, dispatched_at = v.dispatched_at,
       completed_at = v.completed_at, last_status_code = v.code, lease_expires_at = NULL
  FROM unnest(%s::bigint[], %s::timestamptz[], %s::varchar[], %s::timestamptz[],
              %s::timestamptz[], %s::timestamptz[], %s::int[])
       AS v(id, claimed, status, next_at, dispatched_at, completed_at, code)
 WHERE d.id = v.id AND d.status = 'in_flight' AND d.last_attempt_at = v.claimed
RETURNING d.id
"""  # noqa: S608 - the table name is ours, every value is a parameter
_ATTEMPT_COLUMNS = (
    "delivery_id",
    "number",
    "outcome",
    "started_at",
    "duration_ms",
    "status_code",
    "error",
    "error_class",
    "request_headers",
    "response_headers",
    "response_body",
    "request_body",
    "request_body_bytes",
)
_COPY_ATTEMPTS_SQL = (
    f"COPY {DeliveryAttempt._meta.db_table} ({', '.join(_ATTEMPT_COLUMNS)}) FROM STDIN"
)


def attempts_record(jobs: Sequence[Job]) -> None:
    """Record finished jobs in one transaction: attempt rows, next states, dead letters.

    A delivery's state only changes if this attempt still holds the claim (still in flight,
    same claim); an attempt whose lease was taken back is recorded but changes nothing else.
    Short retries are published with a countdown after commit; long ones are parked in the row.
    Jobs marked `deferred` were never sent: their claims are given back.
    """
    close_old_connections()
    deferred: dict[float, list[Claim]] = {}
    for job in jobs:
        if job.deferred is not None:
            deferred.setdefault(job.deferred, []).append(job.claim)
    if deferred:
        for delay, claims in deferred.items():
            deliveries_release(claims=claims, delay=delay)
        jobs = [job for job in jobs if job.deferred is None]
        if not jobs:
            return
    try:
        _attempts_write(jobs)
    except IntegrityError:
        _attempts_write_again(jobs)


def _attempts_write_again(jobs: Sequence[Job]) -> None:
    """Record a batch whose write broke a constraint. Three causes, all handled here:

    - the batch was written before and the commit's answer was lost: a job whose send is in the
      audit log already (same delivery, same start) is skipped, as everything its transaction
      wrote committed with it;
    - a delivery was deleted while in flight (its endpoint or event deleted): its job is dropped
      and named in the log;
    - two sends of a delivery carry the same attempt number: a claim committed without waiting
      for the WAL flush was lost in a database crash, and the delivery was claimed again. Both
      requests reached the consumer, so both are recorded, the later one under the next number.
    """
    ids = sorted({job.claim.delivery_id for job in jobs})
    with transaction.atomic():
        # FOR UPDATE, not NO KEY UPDATE: besides keeping these rows from being deleted, it holds
        # off other recorders' attempt inserts for them (their foreign key check takes KEY
        # SHARE), so the numbers chosen below are still free at commit.
        alive = set(
            Delivery.objects.select_for_update()
            .filter(pk__in=ids)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if len(alive) < len(ids):
            logger.warning(
                "deliveries deleted while in flight, attempts not recorded: %s",
                sorted(set(ids) - alive),
            )
        recorded: dict[int, dict[int, datetime]] = {}  # delivery -> attempt number -> start
        for delivery_id, number, started in DeliveryAttempt.objects.filter(
            delivery_id__in=alive
        ).values_list("delivery_id", "number", "started_at"):
            recorded.setdefault(delivery_id, {})[number] = started
        kept: list[Job] = []
        numbers: list[int] = []
        for job in jobs:
            if job.claim.delivery_id not in alive:
                continue
            sends = recorded.setdefault(job.claim.delivery_id, {})
            started = datetime.fromtimestamp(job.started_at, UTC)
            if started in sends.values():
                continue  # recorded by the write whose answer was lost
            number = job.claim.number if job.claim.number not in sends else max(sends) + 1
            if number != job.claim.number:
                logger.warning(
                    "delivery %s was claimed twice as attempt %d (a claim lost in a database "
                    "crash); this send is recorded as attempt %d",
                    job.claim.delivery_id,
                    job.claim.number,
                    number,
                )
            sends[number] = started
            kept.append(job)
            numbers.append(number)
        if kept:
            _attempts_write(kept, numbers=numbers)
        # a delivery counts every request it made, the one under a forgotten claim included
        for job, number in zip(kept, numbers, strict=True):
            if number != job.claim.number:
                Delivery.objects.filter(pk=job.claim.delivery_id, attempt_count__lt=number).update(
                    attempt_count=number
                )


def _attempts_write(jobs: Sequence[Job], *, numbers: Sequence[int] | None = None) -> None:
    """Write a batch's attempt rows (numbered as claimed, or by `numbers`), next states, dead
    letters, endpoint health and the metrics rollup in one transaction."""
    now = timezone.now()
    clock = time.time()
    decided: list[tuple[Job, Decision]] = []
    for job in jobs:
        claim, result = job.claim, job.result
        assert result is not None
        schedule = (
            claim.schedule if claim.schedule is not None else settings.WEBHOOKS_RETRY_SCHEDULE
        )
        decision = decide(
            status_code=result.status_code,
            error_class=result.error_class,
            error=result.error,
            retry_after=result.headers.get("retry-after"),
            attempts_made=claim.number - claim.retry_base,  # a replay restarts the schedule
            schedule=schedule,
            jitter=settings.WEBHOOKS_RETRY_JITTER,
            now=clock,
        )
        decided.append((job, decision))

    attempts = []
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
    retries: dict[int, list[int]] = {}
    for index, (job, decision) in enumerate(decided):
        claim, result = job.claim, job.result
        assert result is not None
        attempts.append(
            (
                claim.delivery_id,
                numbers[index] if numbers is not None else claim.number,
                _OUTCOMES[decision.verdict],
                datetime.fromtimestamp(job.started_at, UTC),
                round(result.duration_ms, 3),
                result.status_code,
                result.error[:500],
                result.error_class,
                job.stored_headers,
                result.headers,
                result.body,
                _stored(job)[: settings.WEBHOOKS_STORED_BODY_MAX_BYTES].decode("utf-8", "ignore"),
                len(job.body) if job.body else None,
            )
        )
        if decision.verdict is Verdict.RETRY:
            delay = decision.delay or 0.0
            due = now + timedelta(seconds=delay)
            # A short delay rides on a Celery countdown: the row counts as dispatched for that
            # time. A long one is parked with no message, for the sweeper.
            countdown = delay <= settings.WEBHOOKS_COUNTDOWN_MAX
            if countdown:
                retries.setdefault(math.ceil(delay), []).append(claim.delivery_id)
            row = (Delivery.Status.PENDING.value, due, due if countdown else None, None)
        else:
            row = (_FINAL_STATUS[decision.verdict], None, None, now)
        for column, value in zip(
            columns, (claim.delivery_id, claim.claimed_at, *row, result.status_code), strict=True
        ):
            column.append(value)

    with transaction.atomic():
        with binding_cursor() as cursor:
            with cursor.copy(_COPY_ATTEMPTS_SQL) as stream:
                for values in attempts:
                    stream.write_row(
                        (
                            *values[:8],
                            *(orjson.dumps(v).decode() for v in values[8:10]),
                            *values[10:],
                        )
                    )
            cursor.execute(_ADVANCE_SQL, columns)
            advanced = {r[0] for r in cursor.fetchall()}
        DeadLetter.objects.bulk_create(
            DeadLetter(
                delivery_id=job.claim.delivery_id,
                endpoint_id=job.claim.endpoint_id,
                event_type=job.claim.event_type,
                reason=decision.reason[:500],
                last_status_code=job.result.status_code if job.result else None,
                created_at=now,
            )
            for job, decision in decided
            if job.claim.delivery_id in advanced
            and decision.verdict in (Verdict.FAILED, Verdict.DEAD)
        )
        _endpoint_health_note(decided=decided, advanced=advanced)
        metrics.stats_add(_stats_of(decided, advanced), at=now)
        for endpoint_id, reason in {
            job.claim.endpoint_id: decision.reason
            for job, decision in decided
            if decision.disable_endpoint
        }.items():
            endpoint_disable_with_notice(endpoint_id=endpoint_id, reason=reason)
        for countdown, ids in retries.items():
            due_ids = [i for i in ids if i in advanced]
            if due_ids:
                transaction.on_commit(
                    partial(deliveries_enqueue, delivery_ids=due_ids, countdown=countdown),
                    robust=True,
                )
    if attempt_logger.isEnabledFor(logging.INFO):
        _attempts_log(decided, advanced)


def _attempts_log(decided: Sequence[tuple[Job, Decision]], advanced: set[int]) -> None:
    """One log record per recorded attempt, with structured fields (a JSON line each under
    WEBHOOKS_LOG_FORMAT=json): ids, outcome, status, duration, error class. Never the body,
    the headers or the error text (which may quote the response)."""
    for job, decision in decided:
        claim, result = job.claim, job.result
        assert result is not None
        fields = {
            "event_id": claim.event_id,
            "event_type": claim.event_type,
            "endpoint_id": claim.endpoint_id,
            "delivery_id": claim.delivery_id,
            "attempt": claim.number,
            "outcome": _OUTCOMES[decision.verdict],
            "status_code": result.status_code,
            "duration_ms": round(result.duration_ms, 1),
            "error_class": result.error_class or None,
            "next_attempt_in_s": (
                round(decision.delay or 0.0, 1) if decision.verdict is Verdict.RETRY else None
            ),
            "stale": claim.delivery_id not in advanced,  # its lease was taken back meanwhile
        }
        attempt_logger.info(
            "attempt %s %s of delivery %s (event %s, endpoint %s): %s in %.1f ms%s",
            claim.number,
            fields["outcome"],
            claim.delivery_id,
            claim.event_id,
            claim.endpoint_id,
            result.status_code or result.error_class,
            result.duration_ms,
            f", next in {fields['next_attempt_in_s']} s" if fields["next_attempt_in_s"] else "",
            extra={"fields": fields},
        )


def _stats_of(decided: Sequence[tuple[Job, Decision]], advanced: set[int]) -> metrics.Deltas:
    """The rollup counts of a recorded batch. Outcomes count only where this attempt moved
    its delivery (a lease taken back changes nothing); every request made counts as an attempt."""
    deltas = metrics.Deltas()
    for job, decision in decided:
        claim, result = job.claim, job.result
        assert result is not None
        sent = result.error_class not in NOT_SENT
        moved = claim.delivery_id in advanced
        if not (sent or moved):
            continue
        delta = deltas.of(claim.endpoint_id, claim.event_type)
        if sent:
            delta.attempt(result.duration_ms)
        if not moved:
            continue
        if decision.verdict is Verdict.SUCCEEDED:
            answered = job.started_at + result.duration_ms / 1000
            accepted = claim.accepted_at.timestamp() if claim.accepted_at else job.started_at
            delta.success((answered - accepted) * 1000)
        elif decision.verdict is Verdict.RETRY:
            delta.retried += 1
        else:
            delta.dead_lettered += 1
            if decision.verdict is Verdict.DEAD:
                delta.dead += 1
            else:
                delta.failed += 1
    return deltas


# --- Endpoint health -----------------------------------------------------------------------------


def _endpoint_health_note(*, decided: Sequence[tuple[Job, Decision]], advanced: set[int]) -> None:
    """Track each endpoint's current run of failures: a success ends it, a failure starts it.

    Writes only when a run starts or ends (the filters match nothing otherwise).
    """
    succeeded: set[str] = set()
    failed_first: dict[str, datetime] = {}
    for job, decision in decided:
        if job.claim.delivery_id not in advanced:
            continue
        endpoint_id = job.claim.endpoint_id
        if decision.verdict is Verdict.SUCCEEDED:
            succeeded.add(endpoint_id)
        elif job.result and job.result.error_class != "endpoint_disabled":
            # our own refusal to send is not the endpoint failing
            at = datetime.fromtimestamp(job.started_at, UTC)
            failed_first[endpoint_id] = min(at, failed_first.get(endpoint_id, at))
    if succeeded:
        Endpoint.objects.filter(pk__in=succeeded, failing_since__isnull=False).update(
            failing_since=None
        )
    for endpoint_id, at in failed_first.items():
        if endpoint_id not in succeeded:
            Endpoint.objects.filter(pk=endpoint_id, failing_since__isnull=True).update(
                failing_since=at
            )


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _operational_type(name: str, schema: dict[str, Any], description: str) -> SchemaVersion:
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
        version = _operational_type(WEBHOOK_TEST, WEBHOOK_TEST_SCHEMA, WEBHOOK_TEST_DESCRIPTION)
        event = Event.objects.create(
            event_type_id=WEBHOOK_TEST,
            schema_version=version,
            application=endpoint.application,
            data={
                "endpoint_id": endpoint.pk,
                "message": "A test event from the webhook delivery service.",
                "sent_by": actor[:200],
                "sent_at": _iso(now),
            },
            occurred_at=now,
            created_at=now,
        )
        (delivery_id,) = _deliveries_insert(
            event_ids=[event.pk], endpoint_ids=[endpoint.pk], now=now
        )
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
    _operational_type(ENDPOINT_DISABLED, ENDPOINT_DISABLED_SCHEMA, ENDPOINT_DISABLED_DESCRIPTION)
    data = {
        "endpoint_id": row["id"],
        "url": row["url"],
        "application": row["application__uid"],
        "reason": row["disabled_reason"],
        "disabled_at": _iso(row["disabled_at"]),
        "failing_since": _iso(row["failing_since"]),
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
    """Beat job: disable each endpoint whose every attempt failed for WEBHOOKS_DISABLE_AFTER."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.WEBHOOKS_DISABLE_AFTER)
    disabled = []
    for endpoint_id, since in Endpoint.objects.filter(
        enabled=True, failing_since__lt=cutoff
    ).values_list("id", "failing_since"):
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
    events = Event.objects.filter(created_at__gte=since, application_id=endpoint.application_id)
    if endpoint.event_types:
        events = events.filter(event_type_id__in=endpoint.event_types)
    else:
        events = events.exclude(event_type_id__in=OPERATIONAL_EVENT_TYPES)
    events = events.exclude(
        Exists(Delivery.objects.filter(event_id=OuterRef("pk"), endpoint_id=endpoint.pk))
    )
    now = timezone.now()
    created = 0
    batch: list[Delivery] = []
    for event_id in (
        events.order_by("created_at").values_list("id", flat=True).iterator(chunk_size=batch_size)
    ):
        batch.append(
            Delivery(
                event_id=event_id,
                endpoint_id=endpoint.pk,
                next_attempt_at=now,
                dispatched_at=None,
                created_at=now,
            )
        )
        if len(batch) == batch_size:
            created += len(Delivery.objects.bulk_create(batch, ignore_conflicts=True))
            batch = []
    if batch:
        created += len(Delivery.objects.bulk_create(batch, ignore_conflicts=True))
    return created


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
            delta = deltas.of(endpoint_id, event_type)
            delta.failed += 1
            delta.dead_lettered += 1
        metrics.stats_add(deltas, at=now)
    return len(rows)


# --- The sweeper --------------------------------------------------------------------------------


WORKER_LOST = "worker_lost"


def _record_lost_attempts(*, delivery_ids: Sequence[int], now: datetime) -> int:
    """Record the try of each expired claim that left no attempt row (its worker was killed, or
    its lease ran out, between claiming and recording): outcome `unknown`, error_class
    `worker_lost`, started when it was claimed, and count it in the metrics. Called with the
    rows locked, before they are given back, so the audit log has every try."""
    rows = list(
        Delivery.objects.filter(id__in=delivery_ids)
        .exclude(attempts__number=F("attempt_count"))
        .filter(attempt_count__gt=0)
        .values("id", "attempt_count", "last_attempt_at", "endpoint_id", "event__event_type_id")
    )
    if not rows:
        return 0
    DeliveryAttempt.objects.bulk_create(
        [
            DeliveryAttempt(
                delivery_id=row["id"],
                number=row["attempt_count"],
                outcome=DeliveryAttempt.Outcome.UNKNOWN,
                started_at=row["last_attempt_at"] or now,  # when it was claimed
                duration_ms=0.0,
                error="the worker was lost before it recorded this try (killed, or its lease "
                "ran out): whether the consumer received it is unknown; it is tried again",
                error_class=WORKER_LOST,
            )
            for row in rows
        ],
        ignore_conflicts=True,  # recorded meanwhile by a worker that was only late
    )
    deltas = metrics.Deltas()
    for row in rows:
        deltas.of(row["endpoint_id"], row["event__event_type_id"]).lost += 1
    metrics.stats_add(deltas, at=now)
    logger.warning("recorded %d tries whose worker was lost", len(rows))
    return len(rows)


def _expired_leases(now: datetime) -> QuerySet[Delivery]:
    """In-flight rows whose lease ran out, except claims made before PostgreSQL last started,
    for one lease after that start: their workers may be alive, waiting for the database to
    record their answers or renew; they get one lease to do so before the sweeper takes any
    back. Taking them back at once had a delivery sent again while its first answer waited in
    the recorder."""
    expired = Delivery.objects.filter(status=Delivery.Status.IN_FLIGHT, lease_expires_at__lt=now)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_postmaster_start_time()")
        started = cursor.fetchone()[0]
    if now - started < timedelta(seconds=settings.WEBHOOKS_LEASE_SECONDS):
        expired = expired.exclude(last_attempt_at__lt=started)
    return expired


def deliveries_requeue_stuck(*, batch_size: int = 1000, max_batches: int = 50) -> dict[str, int]:
    """Rebuild the work from PostgreSQL: the beat job `requeue_stuck`.

    1. `in_flight` rows whose lease expired (the worker died mid-request) go back to `pending`.
    2. Due `pending` rows with no live message (parked retries, messages lost with a broker
       outage or restart) are marked dispatched and published after commit.
    Rows are taken with FOR UPDATE SKIP LOCKED, so two sweeps at once never publish a row twice.
    """
    now = timezone.now()
    reclaimed = 0
    with transaction.atomic():
        expired = list(
            _expired_leases(now)
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[: batch_size * max_batches]
        )
        if expired:
            _record_lost_attempts(delivery_ids=expired, now=now)
            reclaimed = Delivery.objects.filter(id__in=expired).update(
                status=Delivery.Status.PENDING,
                lease_expires_at=None,
                next_attempt_at=now,
                dispatched_at=None,
            )
            logger.warning("took back %d deliveries whose lease expired", reclaimed)

    stale = now - timedelta(seconds=settings.WEBHOOKS_REDISPATCH_AFTER)
    published = 0
    # Healthy endpoints: everything due. A failing endpoint (its last attempt failed) gets at
    # most WEBHOOKS_FAILING_ENDPOINT_BATCH per sweep: a backlog for an endpoint that is down is
    # paced instead of being claimed and put back again and again; once an attempt succeeds,
    # the next sweep sends the rest.
    healthy = Endpoint.objects.filter(pk=OuterRef("endpoint_id"), failing_since__isnull=True)
    for _ in range(max_batches):
        with transaction.atomic():
            ids = list(
                Delivery.objects.select_for_update(skip_locked=True)
                .filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
                .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lte=stale))
                .filter(Exists(healthy))
                .order_by("next_attempt_at")
                .values_list("id", flat=True)[:batch_size]
            )
            Delivery.objects.filter(id__in=ids).update(dispatched_at=now)
        if ids:
            deliveries_enqueue(delivery_ids=ids)
            published += len(ids)
        if len(ids) < batch_size:
            break
    with transaction.atomic(), binding_cursor() as cursor:
        cursor.execute(
            f"""
            WITH picked AS (
                SELECT d.id FROM {_P} AS p CROSS JOIN LATERAL (
                    SELECT id FROM {_D}
                     WHERE endpoint_id = p.id AND status = 'pending' AND next_attempt_at <= %(now)s
                       AND (dispatched_at IS NULL OR dispatched_at <= %(stale)s)
                     ORDER BY next_attempt_at
                     LIMIT %(cap)s
                       FOR UPDATE SKIP LOCKED
                ) AS d
                WHERE p.failing_since IS NOT NULL
            )
            UPDATE {_D} SET dispatched_at = %(now)s FROM picked WHERE {_D}.id = picked.id
            RETURNING {_D}.id
            """,  # noqa: S608 - table names are ours, every value is a parameter
            {"now": now, "stale": stale, "cap": settings.WEBHOOKS_FAILING_ENDPOINT_BATCH},
        )
        paced = [row[0] for row in cursor.fetchall()]
    if paced:
        deliveries_enqueue(delivery_ids=paced)
        published += len(paced)
    return {"reclaimed": reclaimed, "published": published}


# --- Retention ---------------------------------------------------------------------------------


def events_prune(*, batch_size: int = 1000, max_batches: int = 100) -> int:
    """Beat job: delete events older than WEBHOOKS_RETENTION_DAYS whose every delivery succeeded
    before then, with those deliveries, their attempts and any replayed dead letters.

    Events with a delivery that failed, died or is still going are kept whole (they are in the
    dead-letter queue or still owed). Works in batches of `batch_size` events, each in its own
    transaction, taking rows with SKIP LOCKED. Returns how many events were deleted.
    """
    cutoff = timezone.now() - timedelta(days=settings.WEBHOOKS_RETENTION_DAYS)
    unfinished = Delivery.objects.filter(event_id=OuterRef("pk")).exclude(
        status=Delivery.Status.SUCCEEDED, completed_at__lt=cutoff
    )
    deleted = 0
    for _ in range(max_batches):
        with transaction.atomic():
            event_ids = list(
                Event.objects.select_for_update(skip_locked=True)
                .filter(created_at__lt=cutoff)
                .exclude(Exists(unfinished))
                .order_by("created_at")
                .values_list("id", flat=True)[:batch_size]
            )
            if event_ids:
                with connection.cursor() as cursor:
                    for table, column in (
                        (DeliveryAttempt._meta.db_table, "delivery_id"),
                        (DeadLetter._meta.db_table, "delivery_id"),
                    ):
                        cursor.execute(
                            f"DELETE FROM {table} WHERE {column} IN "  # noqa: S608 - our names
                            f"(SELECT id FROM {Delivery._meta.db_table} WHERE event_id = ANY(%s))",
                            [event_ids],
                        )
                    cursor.execute(
                        f"DELETE FROM {Delivery._meta.db_table} WHERE event_id = ANY(%s)",  # noqa: S608
                        [event_ids],
                    )
                    cursor.execute(
                        f"DELETE FROM {Event._meta.db_table} WHERE id = ANY(%s)",  # noqa: S608
                        [event_ids],
                    )
        deleted += len(event_ids)
        if len(event_ids) < batch_size:
            break
    if deleted:
        logger.info(
            "pruned %d events older than %d days", deleted, settings.WEBHOOKS_RETENTION_DAYS
        )
    return deleted


# --- Dead letters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayResult:
    replayed: int
    skipped_disabled: int


def dead_letters_replay(*, dead_letters: QuerySet[DeadLetter], actor: str) -> ReplayResult:
    """Put the deliveries of waiting dead letters back to `pending` with a fresh schedule.

    Old attempts are kept; the dead letters record who replayed them and when. Dead letters of
    disabled endpoints are skipped (re-enable the endpoint first).
    """
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            dead_letters.select_for_update(skip_locked=True, of=("self",))
            .filter(replayed_at__isnull=True)
            .values_list("id", "delivery_id", "endpoint__enabled")
        )
        replay = [(dl_id, d_id) for dl_id, d_id, enabled in rows if enabled]
        skipped = len(rows) - len(replay)
        delivery_ids = [d_id for _, d_id in replay]
        DeadLetter.objects.filter(id__in=[dl_id for dl_id, _ in replay]).update(
            replayed_at=now, replayed_by=actor[:200]
        )
        if replay:
            audit.record(
                actor=actor,
                action="dead_letters.replayed",
                object_type="dead_letter",
                object_id=str(replay[0][0]) if len(replay) == 1 else f"{len(replay)} dead letters",
                after={
                    "count": len(replay),
                    "skipped_disabled": skipped,
                    "dead_letter_ids": [dl_id for dl_id, _ in replay[:1000]],
                },
            )
        Delivery.objects.filter(
            id__in=delivery_ids, status__in=[Delivery.Status.FAILED, Delivery.Status.DEAD]
        ).update(
            status=Delivery.Status.PENDING,
            next_attempt_at=now,
            dispatched_at=now,
            completed_at=None,
            retry_base=F("attempt_count"),
        )
        if delivery_ids:
            transaction.on_commit(
                lambda: deliveries_enqueue(delivery_ids=delivery_ids, queue=FRESH_QUEUE),
                robust=True,
            )
    return ReplayResult(replayed=len(delivery_ids), skipped_disabled=skipped)
