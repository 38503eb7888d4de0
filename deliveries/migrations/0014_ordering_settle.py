"""The ordering settle (deliveries/services/ordering.py) as a database function.

It reads and writes a key's deliveries in every day partition: planned as a plain statement it
took ~5 ms of planning on each call with ten partitions, growing with each day kept. A PL/pgSQL
function keeps its plans for the session (generic ones: `plan_cache_mode`), works through any
connection pooler, and takes the lock and settles in one round trip: each statement of a
volatile function reads a fresh snapshot, so the settle sees what committed before the lock was
granted.
"""

from django.db import migrations

SETTLE = """
CREATE OR REPLACE FUNCTION webhooks_ordering_settle(
    p_endpoints varchar[], p_keys varchar[], p_lows bigint[], p_now timestamptz, p_high bigint
) RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_freed bigint[];
    v_emptied bigint[];
    v_heads bigint[];
    v_wake bigint[];
    v_held bigint[];
BEGIN
    -- the keys' locks first, in (endpoint_id, key) order: every writer takes them so; every
    -- statement after this one reads a fresh snapshot, taken once the locks were granted
    PERFORM 1 FROM deliveries_orderingkey AS o
      JOIN unnest(p_endpoints, p_keys) AS t(endpoint_id, key)
        ON o.endpoint_id = t.endpoint_id AND o.key = t.key
     ORDER BY o.endpoint_id, o.key
       FOR NO KEY UPDATE OF o;
    -- deliveries just made or reopened (their day's first id in p_lows) are read from now on
    UPDATE deliveries_orderingkey AS o SET low_id = LEAST(o.low_id, t.low)
      FROM unnest(p_endpoints, p_keys, p_lows) AS t(endpoint_id, key, low)
     WHERE o.endpoint_id = t.endpoint_id AND o.key = t.key AND t.low IS NOT NULL
       AND (o.low_id IS NULL OR o.low_id > t.low);
    -- Each key: is its slot's delivery still in flight (busy), its head (the lowest sequence
    -- pending), and whether an earlier dead delivery holds it (`block`). A key's deliveries
    -- are read from `low_id` up (its day partitions that can hold one), below `p_high` (the
    -- days made ahead hold none yet).
    WITH k AS (
        SELECT o.id AS key_id, o.endpoint_id, o.key, o.in_flight, o.low_id,
               p.ordering_on_dead AS on_dead,
               (o.in_flight IS NOT NULL AND EXISTS (
                    SELECT 1 FROM deliveries_delivery AS f
                     WHERE f.id = o.in_flight AND f.status = 'in_flight'
               )) AS busy
          FROM unnest(p_endpoints, p_keys) AS t(endpoint_id, key)
          JOIN deliveries_orderingkey AS o ON o.endpoint_id = t.endpoint_id AND o.key = t.key
          JOIN webhooks_endpoint AS p ON p.id = o.endpoint_id
    ),
    s AS (
        SELECT k.key_id, k.in_flight, k.busy, h.id AS head, h.next_attempt_at AS head_due,
               (k.on_dead = 'block' AND EXISTS (
                   SELECT 1 FROM deliveries_delivery AS x
                     JOIN deliveries_deadletter AS l
                       ON l.delivery_id = x.id AND l.replayed_at IS NULL
                    WHERE x.endpoint_id = k.endpoint_id AND x.ordering_key = k.key
                      AND x.id >= k.low_id AND x.id < p_high
                      AND x.status IN ('failed', 'dead')
                      AND (h.sequence IS NULL OR x.sequence < h.sequence)
               )) AS blocked
          FROM k LEFT JOIN LATERAL (
               SELECT d.id, d.sequence, d.next_attempt_at FROM deliveries_delivery AS d
                WHERE d.endpoint_id = k.endpoint_id AND d.ordering_key = k.key
                  AND d.id >= k.low_id AND d.id < p_high AND d.status = 'pending'
                ORDER BY d.sequence LIMIT 1
          ) AS h ON NOT k.busy
    )
    SELECT array_agg(key_id) FILTER (WHERE in_flight IS NOT NULL AND NOT busy),
           array_agg(key_id) FILTER (WHERE NOT busy AND head IS NULL AND NOT blocked),
           array_agg(head) FILTER (WHERE head IS NOT NULL AND NOT blocked),
           array_agg(head) FILTER (WHERE head IS NOT NULL AND NOT blocked AND head_due IS NULL)
      INTO v_freed, v_emptied, v_heads, v_wake
      FROM s;
    -- slots whose claim ended are free; a key with nothing left to send reads no day
    UPDATE deliveries_orderingkey SET in_flight = NULL WHERE id = ANY(v_freed);
    UPDATE deliveries_orderingkey SET low_id = NULL WHERE id = ANY(v_emptied);
    -- every pending one that is due but is not its key's head waits again
    SELECT array_agg(d.id) INTO v_held
      FROM deliveries_orderingkey AS o
      JOIN unnest(p_endpoints, p_keys) AS t(endpoint_id, key)
        ON o.endpoint_id = t.endpoint_id AND o.key = t.key
     CROSS JOIN LATERAL (
           SELECT d.id FROM deliveries_delivery AS d
            WHERE d.endpoint_id = o.endpoint_id AND d.ordering_key = o.key
              AND d.id >= o.low_id AND d.id < p_high
              AND d.status = 'pending' AND d.next_attempt_at IS NOT NULL
     ) AS d
     WHERE d.id <> ALL(coalesce(v_heads, '{}'));
    IF v_held IS NOT NULL THEN
        UPDATE deliveries_delivery SET next_attempt_at = NULL, dispatched_at = NULL
         WHERE id = ANY(v_held) AND status = 'pending';
    END IF;
    -- and each head that waited is due now
    IF v_wake IS NOT NULL THEN
        UPDATE deliveries_delivery SET next_attempt_at = p_now, dispatched_at = p_now
         WHERE id = ANY(v_wake) AND status = 'pending';
        RETURN QUERY SELECT unnest(v_wake);
    END IF;
END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("deliveries", "0013_ordering")]

    operations = [
        migrations.RunSQL(
            SETTLE,
            "DROP FUNCTION IF EXISTS webhooks_ordering_settle("
            "varchar[], varchar[], bigint[], timestamptz, bigint)",
        )
    ]
