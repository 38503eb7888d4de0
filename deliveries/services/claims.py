"""Claims: one statement takes due deliveries for one attempt each, with everything sending
them needs; leases renewed while a claim is held; claims given back unsent."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from deliveries.job import Job
from deliveries.models import Delivery, Event, OrderingKey
from deliveries.partition_keys import claim_bounds, id_span
from schemas_app.models import EventType
from webhooks import crypto, signing
from webhooks.models import Endpoint, EndpointSecret
from webhooks_project.db import binding_cursor

from . import ordering
from .enqueue import FRESH_QUEUE, deliveries_enqueue

logger = logging.getLogger(__name__)


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
    schedule: list[int] | None  # the endpoint's retry schedule
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
    body_digest: str | None = None  # of the body stored on the delivery, if an attempt stored it
    type_schedule: list[int] | None = None  # the event type's retry schedule
    ordering_key: str | None = None  # to an ordered endpoint: its key, and its place in it
    sequence: int | None = None
    traceparent: str | None = None  # of the span that accepted the event (tracing on)
    trace_propagation: bool = False  # the endpoint wants the `traceparent` header


_D = Delivery._meta.db_table
_E = Event._meta.db_table
_P = Endpoint._meta.db_table

_S = EndpointSecret._meta.db_table
_T = EventType._meta.db_table
_K = OrderingKey._meta.db_table

# One statement, one round trip, in autocommit. Rows are locked in id order and locked ones
# skipped, so two claims over overlapping ids never deadlock and never both win a row. Returns
# each claimed row joined with its event, its endpoint and the endpoint's signing secrets.
# A delivery to an ordered endpoint is claimed only if it takes its key's slot, never waiting
# for it; that it is the key's head is kept by settling, which leaves no other one of the key
# due (services/ordering.py: reading the key's deliveries here cost more to plan, across every
# day partition, than the whole claim).
# The claim commits without waiting for the WAL flush (`synchronous_commit` off for this one
# transaction): if PostgreSQL crashed right after, the claim is forgotten and the delivery is
# sent again, a duplicate of the kind a crash always allows, never a loss. Not for an ordered
# delivery: a forgotten claim would let the key's next one go while this one's request runs.
# Events and attempt records keep synchronous commits. The claim that comes after a lost one
# has the same attempt number, so the claim time written here (`last_attempt_at`, written by
# nothing else) is what identifies a claim: renewing, recording and giving back match it, and
# a send of a lost claim is recorded under the next free number. The lease expiry is not the
# token: renewals move it.
_CLAIM_SQL = f"""
WITH due AS (
    SELECT id, endpoint_id, ordering_key, sequence FROM {_D}
     WHERE id = ANY(%(ids)s) AND id >= %(low)s AND id < %(high)s
       AND status = 'pending' AND next_attempt_at <= %(now)s
       AND endpoint_id <> ALL(%(skip)s)
     ORDER BY id
       FOR UPDATE SKIP LOCKED
),
cfg AS (
    SELECT set_config('synchronous_commit', CASE WHEN EXISTS (
        SELECT 1 FROM due WHERE ordering_key IS NOT NULL) THEN 'on' ELSE 'off' END, true)
),
turn AS (
    SELECT o.id AS key_id, due.id
      FROM due JOIN {_K} AS o ON o.endpoint_id = due.endpoint_id AND o.key = due.ordering_key
     WHERE o.in_flight IS NULL
       FOR NO KEY UPDATE OF o SKIP LOCKED
),
taken AS (
    UPDATE {_K} AS o SET in_flight = turn.id, claimed_at = %(now)s FROM turn
     WHERE o.id = turn.key_id
    RETURNING turn.id
)
UPDATE {_D} AS d
   SET status = 'in_flight', attempt_count = d.attempt_count + 1,
       lease_expires_at = %(lease)s, last_attempt_at = %(now)s
  FROM cfg, due, {_E} AS e, {_P} AS p, {_T} AS t
 WHERE d.id = due.id AND e.id = d.event_id AND p.id = d.endpoint_id AND t.name = e.type
   AND d.id >= %(low)s AND d.id < %(high)s AND e.id >= %(first_event)s AND e.id < %(after_event)s
   AND (due.ordering_key IS NULL OR due.id IN (SELECT id FROM taken))
RETURNING d.id AS delivery_id, d.attempt_count AS number, d.retry_base,
          d.request_body_digest AS body_digest,
          e.id AS event_id, e.type AS event_type, e.occurred_at, e.data::text AS data,
          e.created_at AS accepted_at, t.sensitive_fields::text AS sensitive_fields,
          p.id AS endpoint_id, p.url, p.enabled, p.headers::text AS headers,
          p.timeout_seconds AS timeout, p.retry_schedule AS schedule,
          t.retry_schedule AS type_schedule,
          p.rate_limit_per_second AS rate_limit, p.encryption_key::text AS encryption_key,
          ARRAY(SELECT s.secret FROM {_S} AS s
                 WHERE s.endpoint_id = p.id AND (s.expires_at IS NULL OR s.expires_at > %(now)s)
                 ORDER BY s.created_at DESC) AS secrets,
          t.transform::text AS type_mapping, (p.transforms -> e.type)::text AS endpoint_mapping,
          t.output_schema::text AS output_schema, t.masking::text AS type_masking,
          (p.masking -> e.type)::text AS endpoint_masking,
          d.ordering_key, d.sequence, e.traceparent, p.trace_propagation
"""  # noqa: S608 - table names are ours, every value is a parameter


def deliveries_claim(
    *, delivery_ids: Sequence[int], now: datetime, skip_endpoints: Sequence[str] = ()
) -> list[Claim]:
    """Claim the due `pending` deliveries among `delivery_ids` for one attempt each."""
    lease = now + timedelta(seconds=settings.WEBHOOKS_LEASE_SECONDS)
    with binding_cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            {
                "ids": list(delivery_ids),
                "now": now,
                "lease": lease,
                "skip": list(skip_endpoints),
                **claim_bounds(delivery_ids),
            },
        )
        rows = cursor.fetchall()
        description = cursor.description
    decoded: dict[str, list[signing.SigningKey] | None] = {}  # once per endpoint

    def signing_keys(endpoint_id: str, stored: list[str]) -> list[signing.SigningKey] | None:
        if endpoint_id not in decoded:
            try:
                decoded[endpoint_id] = [signing.signing_key(crypto.decrypt(x)) for x in stored]
            except crypto.SecretUnreadable:
                # claimed already: the attempt must end recorded, never stuck in flight
                logger.error("endpoint %s: no configured key decrypts its secret", endpoint_id)
                decoded[endpoint_id] = None
        return decoded[endpoint_id]

    # each column named as the Claim field it fills (JSON columns come as text, decoded here)
    names = [column.name for column in description or ()]
    claims = []
    for values in rows:
        row = dict(zip(names, values, strict=True))
        secrets = row.pop("secrets")
        row["data"] = orjson.loads(row["data"])
        row["headers"] = orjson.loads(row["headers"]) if row["headers"] else {}
        row["timeout"] = float(row["timeout"]) if row["timeout"] else None
        row["sensitive_fields"] = (
            orjson.loads(row["sensitive_fields"]) if row["sensitive_fields"] else []
        )
        keys = signing_keys(row["endpoint_id"], secrets)
        claims.append(Claim(**row, keys=keys, lease=lease, claimed_at=now))
    return claims


def reschedule_unclaimed(
    *, delivery_ids: set[int], now: datetime, skip_endpoints: Sequence[str]
) -> None:
    """Ids a message named but the claim skipped: already taken (nothing to do), not yet due
    (publish again for when they are, if that is soon), or locked by a sweep (it publishes them).
    Deliveries to a paused endpoint stay as they are, untouched: the sweeper publishes them
    again (`WEBHOOKS_REDISPATCH_AFTER`, paced for a failing endpoint). An ordered delivery that
    was not taken settles its key (services/ordering.py): held if it is not its key's turn,
    published again if it is (its key was only busy for a moment); one waiting for its key has
    no message to repeat.
    """
    rows = list(
        Delivery.objects.filter(id__in=delivery_ids, status=Delivery.Status.PENDING)
        .exclude(endpoint_id__in=skip_endpoints)
        .values_list("id", "next_attempt_at", "endpoint_id", "ordering_key")
    )
    keys = {(endpoint_id, key) for _, due, endpoint_id, key in rows if key is not None and due}
    if keys:
        # settling waits for whatever held the key (a claim, a recording): a head still due
        # after it is published again at once; the others wait for their turn
        with transaction.atomic():
            ordering.keys_settle(keys, now=now)
        settled = dict(
            Delivery.objects.filter(
                id__in=[r[0] for r in rows if r[3] is not None], status=Delivery.Status.PENDING
            ).values_list("id", "next_attempt_at")
        )
        heads = [i for i, due in settled.items() if due is not None and due <= now]
        if heads:
            deliveries_enqueue(delivery_ids=heads, queue=FRESH_QUEUE)
        rows = [r for r in rows if r[3] is None]
        rows += [(i, due, "", "") for i, due in settled.items() if due is not None and due > now]
    soon: dict[int, list[int]] = {}
    for delivery_id, due, _, _ in rows:
        if due is None:
            continue  # waiting for its key: published when its turn comes
        wait = max(0.0, (due - now).total_seconds())
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
    keys = {(c.endpoint_id, c.ordering_key) for c in claims if c.ordering_key is not None}
    # in one transaction with settling their keys, if any are ordered
    with transaction.atomic() if keys else nullcontext(), binding_cursor() as cursor:
        # only rows this claim still holds: after its lease was taken back, the row may be
        # another claim's
        cursor.execute(
            f"""
            UPDATE {_D} AS d
               SET status = 'pending', attempt_count = d.attempt_count - 1,
                   lease_expires_at = NULL, next_attempt_at = %(due)s, dispatched_at = %(sent)s
              FROM unnest(%(ids)s::bigint[], %(claimed)s::timestamptz[]) AS v(id, claimed)
             WHERE d.id = v.id AND d.status = 'in_flight' AND d.last_attempt_at = v.claimed
               AND d.id >= %(low)s AND d.id < %(high)s
            """,  # noqa: S608 - the table name is ours, every value is a parameter
            {
                "ids": ids,
                "claimed": [c.claimed_at for c in claims],
                "due": due,
                "sent": due if publish else None,
                **id_span(ids),
            },
        )
        # their keys' slots are free again; each stays its key's head, due as given
        ordering.keys_settle(keys)
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
               AND d.id >= %(low)s AND d.id < %(high)s
            RETURNING d.id
            """,  # noqa: S608 - the table name is ours, every value is a parameter
            {
                "ids": [c.delivery_id for c in claims],
                "claimed": [c.claimed_at for c in claims],
                "lease": lease,
                **id_span([c.delivery_id for c in claims]),
            },
        )
        renewed = {row[0] for row in cursor.fetchall()}
    for claim in claims:
        if claim.delivery_id in renewed:
            claim.lease = lease
    return {c.delivery_id for c in claims} - renewed
