"""Ordered delivery per key (README "Routing"): to an endpoint with ordering `per_key`, the
deliveries of events carrying the same `ordering_key` go one at a time, in the order the
events were accepted.

The rules, and who keeps them:

- **Order of acceptance is the order of sequences.** Ingestion takes a key's next sequences by
  an upsert of its `OrderingSequence` row, which holds the row locked until the events commit:
  a later request for the key waits, so sequences commit in the order they were given. The
  key's turn is another row (`OrderingKey`), so claims and recordings never wait for that.
- **One in flight per key.** A claim takes the key's slot (`OrderingKey.in_flight`, locked with
  SKIP LOCKED, re-checked on the row's newest version) in the statement that claims the
  delivery; a claim of an ordered delivery waits for the WAL flush, so a database restart
  cannot forget it while its request runs.
- **Only the head is ever due.** Deliveries whose turn has not come wait with no
  `next_attempt_at` (outside the due index: nothing claims them, the sweeper never sees them)
  and no message. After anything that may change a key's turn (a delivery inserted, recorded,
  given back, taken back by the sweeper, replayed, resent, its dead letter skipped, its
  endpoint's `ordering_on_dead` changed), `keys_settle` runs in the same transaction: under the
  key's lock it frees a slot whose delivery is no longer in flight, holds every pending
  delivery but the head (the lowest sequence pending), and makes the head due (published after
  commit) unless the key is busy, or blocked by an earlier dead delivery under `block`. So the
  claim needs no look at the key's other deliveries, which live in every day partition: that
  look cost more to plan than the whole claim.

The settle is a database function (migration 0014, `webhooks_ordering_settle`): planned as a
plain statement over every day partition it cost ~20 ms of planning a call with 40 partitions;
the function keeps its plan for the session, takes the lock and settles in one round trip, and
each of its statements reads a fresh snapshot, so it never decides on a view older than the last
settle's commit.

Locks: the key rows first (in `(endpoint_id, key)` order), then deliveries; a claim never waits
(SKIP LOCKED on both).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deliveries.models import Delivery, OrderingKey, OrderingSequence
from deliveries.partition_keys import DAY_SHIFT, day_number
from webhooks_project.db import binding_cursor

from .enqueue import FRESH_QUEUE, deliveries_enqueue

Key = tuple[str, str]  # (endpoint id, ordering key)

_D = Delivery._meta.db_table
_K = OrderingKey._meta.db_table
_Q = OrderingSequence._meta.db_table


def sequences_take(*, pairs: Sequence[Key], now: datetime) -> list[int]:
    """The next sequence for each (endpoint, key) pair, in order (a pair given twice gets two
    consecutive ones), and each key's turn row made if it is new. Must run in the transaction
    that stores the deliveries: the counter rows stay locked until it commits, so a key's
    sequences commit in the order they were given."""
    counts = Counter(pairs)
    params = {
        "endpoints": [e for e, _ in counts],
        "keys": [k for _, k in counts],
        "counts": list(counts.values()),
        "now": now,
    }
    with binding_cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {_Q} AS q (endpoint_id, key, last_sequence, used_at)
            SELECT endpoint_id, key, n, %(now)s
              FROM unnest(%(endpoints)s::varchar[], %(keys)s::varchar[], %(counts)s::bigint[])
                   AS t(endpoint_id, key, n)
             ORDER BY endpoint_id, key
            ON CONFLICT (endpoint_id, key) DO UPDATE
               SET last_sequence = q.last_sequence + EXCLUDED.last_sequence,
                   used_at = EXCLUDED.used_at
            RETURNING endpoint_id, key, last_sequence
            """,  # noqa: S608 - the table name is ours, every value is a parameter
            params,
        )
        last = {(e, k): n for e, k, n in cursor.fetchall()}
        # each key's turn row, if it is new (an existing one is neither locked nor written)
        cursor.execute(
            f"""
            INSERT INTO {_K} (endpoint_id, key)
            SELECT endpoint_id, key
              FROM unnest(%(endpoints)s::varchar[], %(keys)s::varchar[]) AS t(endpoint_id, key)
             ORDER BY endpoint_id, key
            ON CONFLICT (endpoint_id, key) DO NOTHING
            """,  # noqa: S608 - the table name is ours, every value is a parameter
            params,
        )
    following = {pair: last[pair] - n + 1 for pair, n in counts.items()}
    taken = []
    for pair in pairs:
        taken.append(following[pair])
        following[pair] += 1
    return taken


def keys_settle(
    pairs: Collection[Key], *, now: datetime | None = None, lows: dict[Key, int] | None = None
) -> list[int]:
    """Under the keys' locks: free slots whose delivery is no longer in flight, hold every
    pending delivery but each key's head, and make a waiting head due unless its key is busy or
    blocked. `lows`: the lowest delivery id made or reopened per key (its deliveries are read
    from that day on). Returns the deliveries made due; they are published when the
    transaction commits. Must run inside a transaction (the one that changed the keys'
    deliveries)."""
    if not pairs:
        return []
    ordered = sorted(set(pairs))
    now = now or timezone.now()
    lows = lows or {}
    # no delivery is in a day after tomorrow's (those partitions are made ahead, empty)
    high = (day_number(now.date()) + 2) << DAY_SHIFT
    with binding_cursor() as cursor:
        # the database function of migration 0014 (kept there: its plans are cached per session)
        cursor.execute(
            "SELECT * FROM webhooks_ordering_settle("
            "%s::varchar[], %s::varchar[], %s::bigint[], %s, %s)",
            [
                [e for e, _ in ordered],
                [k for _, k in ordered],
                [(lows[p] >> DAY_SHIFT) << DAY_SHIFT if p in lows else None for p in ordered],
                now,
                high,
            ],
        )
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


def keys_reopen(delivery_ids: Collection[int], *, now: datetime | None = None) -> list[int]:
    """Settle the keys of deliveries made pending again (replayed, resent): each key's
    deliveries are read from the reopened one's day on. Inside their transaction."""
    if not delivery_ids:
        return []
    lows: dict[Key, int] = {}
    for delivery_id, endpoint_id, key in Delivery.objects.filter(
        id__in=list(delivery_ids), ordering_key__isnull=False
    ).values_list("id", "endpoint_id", "ordering_key"):
        pair = (endpoint_id, str(key))
        lows[pair] = min(lows.get(pair, delivery_id), delivery_id)
    return keys_settle(lows, now=now, lows=lows)


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
    """Forget the keys given no sequence since `idle_before` (default: WEBHOOKS_RETENTION_DAYS
    ago) that hold nothing: no delivery in flight, pending, or ended without success (which a
    dead letter may hold). A key used again after that starts at sequence 1. Part of the
    `prune` beat job. Returns how many were forgotten."""
    if idle_before is None:
        idle_before = timezone.now() - timedelta(days=settings.WEBHOOKS_RETENTION_DAYS)
    with transaction.atomic(), binding_cursor() as cursor:
        cursor.execute(
            f"""
            WITH idle AS (
                SELECT q.id, q.endpoint_id, q.key FROM {_Q} AS q
                 WHERE q.used_at < %(before)s
                   AND NOT EXISTS (
                       SELECT 1 FROM {_K} AS k
                        WHERE k.endpoint_id = q.endpoint_id AND k.key = q.key
                          AND k.in_flight IS NOT NULL)
                   AND NOT EXISTS (
                       SELECT 1 FROM {_D} AS d
                        WHERE d.endpoint_id = q.endpoint_id AND d.ordering_key = q.key
                          AND d.status IN ('pending', 'failed', 'dead'))
                 LIMIT %(limit)s
                   FOR UPDATE OF q SKIP LOCKED
            ),
            turns AS (
                DELETE FROM {_K} AS k USING idle
                 WHERE k.endpoint_id = idle.endpoint_id AND k.key = idle.key
            )
            DELETE FROM {_Q} WHERE id IN (SELECT id FROM idle)
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
