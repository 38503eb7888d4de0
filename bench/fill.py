"""A month of rows, filled by SQL the way the service would have written them: time-ordered
event ids, delivery ids that carry their event's day, each day in its partition.

Used by `bench/scale.py` and by `tests/deliveries/test_pagination.py`. `cursor` is anything with
`execute(sql, params)`: a psycopg connection or cursor, or a Django cursor.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from deliveries.partition_keys import DAY_SHIFT, DELIVERY_SEQUENCE, EPOCH_UNIX_DAY, day_ddl
from webhooks_project.identifiers import new_id

FILLED = "filled"  # the request_hash of filled events, to find them again (`marker`: per fill)
_CHUNK = 50_000


def fill_month(
    cursor: Any,
    *,
    endpoints: list[str],
    event_type: str,
    events: int,
    days: float = 40,
    application_id: int | None = None,
    application_every: int = 10,
    attempts: int = 1,
    dead_every: int = 100,
    replayed_every: int = 0,
    data_filler: int = 200,
    body_bytes: int = 300,
    vacuum: bool = True,
    marker: str = FILLED,
    log: Any = None,
) -> None:
    """`events` events spread evenly over the last `days` days (one in `application_every`
    belongs to `application_id`), a delivery per endpoint each (one in `dead_every` dead, with
    a dead letter; one dead letter in `replayed_every` replayed), `attempts` attempts each, the
    body sent (`body_bytes`) stored once on the delivery, as the recorder stores it."""
    now = datetime.now(UTC)
    first = now - timedelta(days=days)
    day = first.date()
    while day <= now.date():
        for sql in day_ddl(day):
            cursor.execute(sql, [])
        day += timedelta(days=1)
    span = (now - first).total_seconds()
    for start in range(0, events, _CHUNK):
        stamps = [
            first + timedelta(seconds=span * n / events)
            for n in range(start, min(events, start + _CHUNK))
        ]
        cursor.execute(
            """
            INSERT INTO deliveries_event (id, type, application_id, data, idempotency_key,
                request_hash, occurred_at, created_at)
            SELECT t.id, %s, CASE WHEN t.n %% %s = 0 THEN %s::bigint END,
                   jsonb_build_object('n', t.n, 'filler', repeat('x', %s)), NULL, %s, t.at, t.at
              FROM unnest(%s::varchar[], %s::timestamptz[], %s::int[]) AS t(id, at, n)
            """,
            [
                event_type,
                application_every,
                application_id,
                data_filler,
                marker,
                [new_id("evt", int(at.timestamp() * 1000)) for at in stamps],
                stamps,
                list(range(start, start + len(stamps))),
            ],
        )
    if log:
        log("  events filled")
    cursor.execute(
        f"""
        INSERT INTO deliveries_delivery (id, event_id, endpoint_id, status, attempt_count,
            next_attempt_at, dispatched_at, retry_base, last_attempt_at, last_status_code,
            completed_at, created_at, request_body, request_body_digest)
        SELECT ((floor(extract(epoch FROM e.created_at) / 86400)::bigint - {EPOCH_UNIX_DAY})
                 << {DAY_SHIFT}) + nextval('{DELIVERY_SEQUENCE}'),
               e.id, ep, CASE WHEN abs(hashtext(e.id || ep)) %% %s = 0 THEN 'dead'
                              ELSE 'succeeded' END,
               %s, NULL, NULL, 0, e.created_at, 200, e.created_at, e.created_at,
               repeat('x', %s), md5(repeat('x', %s))
          FROM deliveries_event e, unnest(%s::varchar[]) WITH ORDINALITY AS t(ep, n)
         WHERE e.request_hash = %s
         -- ids in the order the service makes them: an event's deliveries one after another
         -- (nextval runs after the sort)
         ORDER BY e.id, t.n
        """,  # noqa: S608 - our constants
        [dead_every, attempts, body_bytes, body_bytes, endpoints, marker],
    )
    if log:
        log("  deliveries filled")
    cursor.execute(
        """
        INSERT INTO deliveries_deliveryattempt (delivery_id, number, outcome, started_at,
            duration_ms, status_code, error, error_class, request_headers, request_body,
            request_body_bytes, response_headers, response_body)
        SELECT d.id, n, 'succeeded', d.created_at, 5.0, 200, '', '',
               '{"content-type": "application/json"}', NULL, %s, '{}', ''
          FROM deliveries_delivery d JOIN deliveries_event e ON e.id = d.event_id,
               generate_series(1, %s) n
         WHERE e.request_hash = %s
        """,
        [body_bytes, attempts, marker],
    )
    if log:
        log("  attempts filled")
    cursor.execute(
        """
        INSERT INTO deliveries_deadletter (delivery_id, endpoint_id, event_type, reason,
            last_status_code, created_at, replayed_at, replayed_by)
        SELECT d.id, d.endpoint_id, %s, 'HTTP 500', 500, d.created_at,
               CASE WHEN %s > 0 AND d.id %% GREATEST(%s, 1) = 0 THEN d.created_at END, ''
          FROM deliveries_delivery d JOIN deliveries_event e ON e.id = d.event_id
         WHERE d.status = 'dead' AND e.request_hash = %s
        """,
        [event_type, replayed_every, replayed_every, marker],
    )
    # as autovacuum would; VACUUM only outside a transaction (a test runs in one)
    for table in ("event", "delivery", "deliveryattempt", "deadletter"):
        cursor.execute(f"{'VACUUM ANALYZE' if vacuum else 'ANALYZE'} deliveries_{table}", [])
