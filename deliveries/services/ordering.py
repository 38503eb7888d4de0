"""Ordered delivery per key (README "Routing"): to an endpoint with ordering `per_key`, the
deliveries of events carrying the same `ordering_key` go one at a time, in the order the
events were accepted.

The rules, and who keeps them:

- **Order of acceptance is the order of sequences.** Ingestion takes a key's next sequences by
  an upsert of its `OrderingKey` row, which holds the row locked until the events commit: a
  later request for the key waits, so sequences commit in the order they were given.
- **One in flight per key.** A claim takes the key's slot (`OrderingKey.in_flight`, locked with
  SKIP LOCKED, re-checked on the row's newest version) in the statement that claims the
  delivery, and only for the key's head: no pending delivery of the key with a lower sequence
  (nor, under `ordering_on_dead = block`, an earlier one that failed for good and whose dead
  letter waits). A claim of an ordered delivery waits for the WAL flush, so a database restart
  cannot forget it while its request runs.
- **Nothing polls a blocked key.** Deliveries whose turn has not come wait with no
  `next_attempt_at` (outside the due index: the sweeper never sees them) and no message. After
  anything that may change a key's turn (a delivery inserted, recorded, given back, taken back
  by the sweeper, replayed, resent, its dead letter skipped), `keys_settle` runs in the same
  transaction: under the key's lock it frees a slot whose delivery is no longer in flight,
  holds every pending delivery but the head, and makes the head due (published after commit)
  unless the key is busy or blocked. Everything it needs is read after the lock is taken, so a
  settle never decides on a view older than the last one's commit.

Locks: the key rows first (in `(endpoint_id, key)` order), then deliveries; a claim never waits
(SKIP LOCKED on both). Settling reads only indexes of a key's pending rows
(`delivery_key_pending_idx`, `delivery_key_ready_idx`): its cost does not grow with the backlog.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deliveries.models import DeadLetter, Delivery, OrderingKey
from webhooks.models import Endpoint
from webhooks_project.db import binding_cursor

from .enqueue import FRESH_QUEUE, deliveries_enqueue

Key = tuple[str, str]  # (endpoint id, ordering key)

_D = Delivery._meta.db_table
_K = OrderingKey._meta.db_table
_L = DeadLetter._meta.db_table
_P = Endpoint._meta.db_table

# An earlier delivery of the key that failed for good and whose dead letter waits: under
# `block`, the key's later deliveries wait for it (replayed, or its dead letter skipped).
BLOCKED_BY_DEAD = f"""
EXISTS (SELECT 1 FROM {_D} AS x JOIN {_L} AS l ON l.delivery_id = x.id AND l.replayed_at IS NULL
         WHERE x.endpoint_id = {{endpoint}} AND x.ordering_key = {{key}}
           AND x.status IN ('failed', 'dead') AND x.sequence < {{sequence}})
"""  # noqa: S608 - table names are ours


def sequences_take(*, pairs: Sequence[Key], now: datetime) -> list[int]:
    """The next sequence for each (endpoint, key) pair, in order (a pair given twice gets two
    consecutive ones). Must run in the transaction that stores the deliveries: the key rows stay
    locked until it commits, so a key's sequences commit in order."""
    counts = Counter(pairs)
    with binding_cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {_K} AS k (endpoint_id, key, last_sequence, used_at)
            SELECT endpoint_id, key, n, %(now)s
              FROM unnest(%(endpoints)s::varchar[], %(keys)s::varchar[], %(counts)s::bigint[])
                   AS t(endpoint_id, key, n)
             ORDER BY endpoint_id, key
            ON CONFLICT (endpoint_id, key) DO UPDATE
               SET last_sequence = k.last_sequence + EXCLUDED.last_sequence,
                   used_at = EXCLUDED.used_at
            RETURNING endpoint_id, key, last_sequence
            """,  # noqa: S608 - the table name is ours, every value is a parameter
            {
                "endpoints": [e for e, _ in counts],
                "keys": [k for _, k in counts],
                "counts": list(counts.values()),
                "now": now,
            },
        )
        last = {(e, k): n for e, k, n in cursor.fetchall()}
    following = {pair: last[pair] - n + 1 for pair, n in counts.items()}
    taken = []
    for pair in pairs:
        taken.append(following[pair])
        following[pair] += 1
    return taken


_LOCK_SQL = f"""
SELECT k.id FROM {_K} AS k
  JOIN unnest(%(endpoints)s::varchar[], %(keys)s::varchar[]) AS t(endpoint_id, key)
    ON k.endpoint_id = t.endpoint_id AND k.key = t.key
 ORDER BY k.endpoint_id, k.key
   FOR NO KEY UPDATE OF k
"""  # noqa: S608 - the table name is ours, every value is a parameter

# Run after the keys are locked (a statement of its own: it reads what committed before the
# locks were granted). Data-modifying CTEs all run; `woken` is what must be published.
_SETTLE_SQL = f"""
WITH k AS (
    SELECT o.id AS key_id, o.endpoint_id, o.key, o.in_flight, p.ordering_on_dead AS on_dead,
           (o.in_flight IS NOT NULL AND EXISTS (
                SELECT 1 FROM {_D} AS f WHERE f.id = o.in_flight AND f.status = 'in_flight'
           )) AS busy
      FROM unnest(%(endpoints)s::varchar[], %(keys)s::varchar[]) AS t(endpoint_id, key)
      JOIN {_K} AS o ON o.endpoint_id = t.endpoint_id AND o.key = t.key
      JOIN {_P} AS p ON p.id = o.endpoint_id
),
freed AS (
    UPDATE {_K} AS o SET in_flight = NULL FROM k
     WHERE o.id = k.key_id AND k.in_flight IS NOT NULL AND NOT k.busy
    RETURNING o.id
),
head AS (
    SELECT h.id, h.next_attempt_at
      FROM k CROSS JOIN LATERAL (
           SELECT d.id, d.sequence, d.next_attempt_at FROM {_D} AS d
            WHERE d.endpoint_id = k.endpoint_id AND d.ordering_key = k.key
              AND d.status = 'pending'
            ORDER BY d.sequence LIMIT 1
      ) AS h
     WHERE NOT k.busy
       AND NOT (k.on_dead = 'block' AND {
    BLOCKED_BY_DEAD.format(endpoint="k.endpoint_id", key="k.key", sequence="h.sequence")
})
),
held AS (
    UPDATE {_D} AS d SET next_attempt_at = NULL, dispatched_at = NULL FROM k
     WHERE d.endpoint_id = k.endpoint_id AND d.ordering_key = k.key AND d.status = 'pending'
       AND d.next_attempt_at IS NOT NULL AND d.id NOT IN (SELECT id FROM head)
    RETURNING d.id
),
woken AS (
    UPDATE {_D} AS d SET next_attempt_at = %(now)s, dispatched_at = %(now)s FROM head
     WHERE d.id = head.id AND head.next_attempt_at IS NULL AND d.status = 'pending'
    RETURNING d.id
)
SELECT id FROM woken
"""  # noqa: S608 - table names are ours, every value is a parameter


def keys_settle(pairs: Collection[Key], *, now: datetime | None = None) -> list[int]:
    """Under the keys' locks: free slots whose delivery is no longer in flight, hold every
    pending delivery but each key's head, and make a waiting head due unless its key is busy or
    blocked. Returns the deliveries made due; they are published when the transaction commits.
    Must run inside a transaction (it is the one that changed the keys' deliveries)."""
    if not pairs:
        return []
    ordered = sorted(set(pairs))
    params = {"endpoints": [e for e, _ in ordered], "keys": [k for _, k in ordered]}
    with binding_cursor() as cursor:
        cursor.execute(_LOCK_SQL, params)
        cursor.execute(_SETTLE_SQL, {**params, "now": now or timezone.now()})
        woken = [row[0] for row in cursor.fetchall()]
    if woken:
        transaction.on_commit(
            partial(deliveries_enqueue, delivery_ids=woken, queue=FRESH_QUEUE), robust=True
        )
    return woken


def keys_of(delivery_ids: Collection[int]) -> set[Key]:
    """The ordering keys of these deliveries (of ordered endpoints only)."""
    if not delivery_ids:
        return set()
    return {
        (endpoint_id, str(key))
        for endpoint_id, key in Delivery.objects.filter(
            id__in=list(delivery_ids), ordering_key__isnull=False
        ).values_list("endpoint_id", "ordering_key")
    }


def keys_lock(pairs: Collection[Key]) -> None:
    """Lock the keys (before the deliveries a change will touch: the order every writer
    follows). Inside a transaction."""
    if not pairs:
        return
    ordered = sorted(set(pairs))
    with binding_cursor() as cursor:
        cursor.execute(
            _LOCK_SQL, {"endpoints": [e for e, _ in ordered], "keys": [k for _, k in ordered]}
        )


def endpoint_keys_settle(*, endpoint_id: str) -> int:
    """Settle every key of an endpoint that has pending deliveries (its `ordering_on_dead`
    changed: keys a dead letter held may move on now). Returns how many were made due."""
    pairs = {
        (endpoint_id, str(key))
        for key in Delivery.objects.filter(
            endpoint_id=endpoint_id, ordering_key__isnull=False, status=Delivery.Status.PENDING
        )
        .values_list("ordering_key", flat=True)
        .distinct()
    }
    with transaction.atomic():
        return len(keys_settle(pairs))


def keys_prune(*, idle_before: datetime | None = None, batch_size: int = 10000) -> int:
    """Delete the keys given no sequence since `idle_before` (default: WEBHOOKS_RETENTION_DAYS
    ago) that hold nothing: no delivery in flight, pending, or ended without success (which a
    dead letter may hold). A key used again after that starts at sequence 1. Part of the
    `prune` beat job."""
    if idle_before is None:
        idle_before = timezone.now() - timedelta(days=settings.WEBHOOKS_RETENTION_DAYS)
    with binding_cursor() as cursor:
        cursor.execute(
            f"""
            DELETE FROM {_K} WHERE id IN (
                SELECT k.id FROM {_K} AS k
                 WHERE k.used_at < %(before)s AND k.in_flight IS NULL
                   AND NOT EXISTS (
                       SELECT 1 FROM {_D} AS d
                        WHERE d.endpoint_id = k.endpoint_id AND d.ordering_key = k.key
                          AND d.status IN ('pending', 'failed', 'dead'))
                 LIMIT %(limit)s)
            """,  # noqa: S608 - table names are ours, every value is a parameter
            {"before": idle_before, "limit": batch_size},
        )
        return cursor.rowcount


def stale_slots_settle(*, claimed_before: datetime, limit: int = 1000) -> int:
    """Settle the keys whose slot was taken before `claimed_before` (a claim's lease is far
    shorter): every path that ends a claim frees its slot, so one still set names a delivery
    edited by hand, or one still running; settling frees the first kind. The sweeper's
    safety net. Returns how many keys were settled."""
    pairs = set(
        OrderingKey.objects.filter(in_flight__isnull=False, claimed_at__lt=claimed_before)
        .order_by("claimed_at")
        .values_list("endpoint_id", "key")[:limit]
    )
    if pairs:
        with transaction.atomic():
            keys_settle(pairs)
    return len(pairs)
