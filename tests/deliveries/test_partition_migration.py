"""Migration 0008 converts a populated installation in place: every row kept, ids unchanged.

A database of its own on the test server, migrated to 0007, filled by SQL with 50,000 events,
100,000 deliveries and 100,000 attempts over 35 days, then migrated by `manage.py migrate` as an
operator would. The time it takes is printed (the README's "Upgrading" quotes it).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.conf import settings

from devstack.process import BASE_DIR
from tests.conftest import worker_env
from webhooks_project.identifiers import new_id

EVENTS = 50_000
SETUP = """
from schemas_app.models import EventType
from webhooks.models import Application, Endpoint
EventType.objects.create(name="legacy.tick")
app = Application.objects.create(uid="acme", name="Acme")
ids = [Endpoint.objects.create(url=f"http://127.0.0.1:9/{n}", application=app).pk for n in (1, 2)]
print(app.pk, ",".join(ids))
"""


@pytest.fixture
def database() -> Iterator[str]:
    db = settings.DATABASES["default"]
    server = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}"
    name = f"migration_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{server}/{name}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _manage(url: str, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=worker_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _fill(conn: psycopg.Connection, application: int, endpoints: list[str]) -> None:
    now = datetime.now(UTC)
    stamps = [now - timedelta(days=35) * (1 - n / EVENTS) for n in range(EVENTS)]
    conn.execute(
        """
        INSERT INTO deliveries_event (id, type, application_id, data, idempotency_key,
            request_hash, occurred_at, created_at)
        SELECT t.id, 'legacy.tick', %s, jsonb_build_object('n', t.n),
               CASE WHEN t.n %% 10 = 0 THEN 'key-' || t.n END, '', t.at, t.at
          FROM unnest(%s::varchar[], %s::timestamptz[], %s::int[]) AS t(id, at, n)
        """,
        [
            application,
            [new_id("evt", int(at.timestamp() * 1000)) for at in stamps],
            stamps,
            list(range(EVENTS)),
        ],
    )
    conn.execute(
        """
        INSERT INTO deliveries_delivery (event_id, endpoint_id, status, attempt_count,
            next_attempt_at, dispatched_at, retry_base, last_status_code, completed_at, created_at)
        SELECT e.id, ep, CASE WHEN abs(hashtext(e.id || ep)) %% 50 = 0 THEN 'dead'
                              WHEN e.created_at > now() - interval '1 hour' THEN 'pending'
                              ELSE 'succeeded' END,
               1, NULL, NULL, 0, 200, e.created_at, e.created_at
          FROM deliveries_event e, unnest(%s::varchar[]) ep
        """,
        [endpoints],
    )
    conn.execute(
        """
        INSERT INTO deliveries_deliveryattempt (delivery_id, number, outcome, started_at,
            duration_ms, status_code, error, error_class, request_headers, request_body,
            request_body_bytes, response_headers, response_body)
        SELECT d.id, 1, 'succeeded', d.created_at, 5.0, 200, '', '', '{}', '{"n": 1}', 8, '{}', ''
          FROM deliveries_delivery d
        """
    )
    conn.execute(
        """
        INSERT INTO deliveries_deadletter (delivery_id, endpoint_id, event_type, reason,
            last_status_code, created_at, replayed_at, replayed_by)
        SELECT id, endpoint_id, 'legacy.tick', 'HTTP 500', 500, created_at, NULL, ''
          FROM deliveries_delivery WHERE status = 'dead'
        """
    )


def _snapshot(conn: psycopg.Connection) -> dict[str, object]:
    one = lambda sql: conn.execute(sql).fetchone()  # noqa: E731
    return {
        "events": one(
            "SELECT count(*), md5(string_agg(id || data::text, ',' ORDER BY id))"
            " FROM deliveries_event"
        ),
        "deliveries": one(
            "SELECT count(*), md5(string_agg(id || event_id || endpoint_id"
            " || status, ',' ORDER BY id)) FROM deliveries_delivery"
        ),
        "attempts": one(
            "SELECT count(*), md5(string_agg(id || '/' || delivery_id || request_body,"
            " ',' ORDER BY id)) FROM deliveries_deliveryattempt"
        ),
        "dead letters": one("SELECT count(*), sum(delivery_id) FROM deliveries_deadletter"),
    }


def test_the_migration_converts_a_populated_database_in_place(database: str) -> None:
    _manage(database, "migrate", "deliveries", "0007", "-v0")
    # the other apps at their newest: the shell below builds rows with today's models
    _manage(database, "migrate", "webhooks", "-v0")
    _manage(database, "migrate", "schemas_app", "-v0")
    application, endpoints = _manage(database, "shell", "-c", SETUP).splitlines()[-1].split()
    with psycopg.connect(database, autocommit=True) as conn:
        _fill(conn, int(application), endpoints.split(","))
        before = _snapshot(conn)
        highest = conn.execute("SELECT max(id) FROM deliveries_delivery").fetchone()[0]
    assert before["deliveries"][0] == 2 * EVENTS  # type: ignore[index]

    started = time.monotonic()
    _manage(database, "migrate", "-v0")
    took = time.monotonic() - started
    print(
        f"\nmigration 0008 on {EVENTS} events, {2 * EVENTS} deliveries and attempts: {took:.1f} s"
    )

    with psycopg.connect(database, autocommit=True) as conn:
        assert _snapshot(conn) == before
        count = lambda table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: E731, S608
        # old deliveries and attempts keep their ids, in the legacy partition
        assert count("deliveries_delivery_legacy") == 2 * EVENTS
        assert count("deliveries_deliveryattempt_legacy") == 2 * EVENTS
        # events went to their days; no default partition got any of them
        assert count("deliveries_event_default") == 0
        assert count("pg_inherits WHERE inhparent = 'deliveries_event'::regclass") >= 36 + 7
        # idempotency keys moved to their table, unique per application
        assert count("deliveries_idempotencykey") == EVENTS // 10
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO deliveries_idempotencykey (application_id, key, event_id, created_at)"
                " VALUES (%s, 'key-10', 'evt_x', now())",
                [int(application)],
            )
        # (event, endpoint) stays unique among the old deliveries
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO deliveries_delivery (id, event_id, endpoint_id, status, attempt_count,"
                " retry_base, created_at) SELECT 7, event_id, endpoint_id, 'pending', 0, 0, now()"
                " FROM deliveries_delivery WHERE id = %s",
                [highest],
            )
        # a new delivery gets today's day in its id, past every old one
        new = conn.execute(
            "INSERT INTO deliveries_delivery (event_id, endpoint_id, status, attempt_count,"
            " retry_base, created_at) VALUES ('evt_new', %s, 'pending', 0, 0, now())"
            " RETURNING id, tableoid::regclass::text",
            [endpoints.split(",")[0]],
        ).fetchone()
        assert new[0] > highest
        assert new[1] == f"deliveries_delivery_p{datetime.now(UTC):%Y%m%d}"
