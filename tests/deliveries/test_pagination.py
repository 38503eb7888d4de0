"""The lists that grow with traffic: cursor pages, and query plans that read an index range.

The plan test fills the tables by SQL (tens of thousands of rows, analyzed), calls every list
route, and asks PostgreSQL to EXPLAIN each query the route ran: none may scan a whole table
that grows with traffic, and none may count one.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from deliveries.models import DeadLetter, Delivery, Event
from webhooks.models import ApiKey, Application
from webhooks.services import api_key_create

BIG_TABLES = (
    "deliveries_event",
    "deliveries_delivery",
    "deliveries_deliveryattempt",
    "deliveries_deadletter",
)


def _path(link: str) -> str:
    parsed = urlparse(link)
    return f"{parsed.path}?{parsed.query}"


def test_event_pages_walk_newest_first_without_a_count(api: APIClient) -> None:
    api.post("/api/v1/event-types/", {"name": "page.tick", "schema": {}}, format="json")
    posted = [
        api.post("/api/v1/events/", {"type": "page.tick", "data": {"n": n}}, format="json").json()
        for n in range(5)
    ]
    seen: list[str] = []
    page = api.get("/api/v1/events/", {"page_size": 2}).json()
    assert set(page) == {"next", "previous", "results"}
    while True:
        seen += [e["id"] for e in page["results"]]
        if page["next"] is None:
            break
        page = api.get(_path(page["next"])).json()
    assert seen == [e["id"] for e in reversed(posted)]
    # and back again from the last page
    back = api.get(_path(page["previous"])).json()
    assert [e["id"] for e in back["results"]] == seen[2:4]


@pytest.mark.parametrize(
    ("query", "pointer"),
    [
        ({"page_size": "0"}, "/page_size"),
        ({"page_size": "501"}, "/page_size"),
        ({"page_size": "ten"}, "/page_size"),
        ({"cursor": "not-ours"}, "/cursor"),
    ],
)
def test_bad_paging_parameters_are_a_400_naming_them(
    api: APIClient, query: dict[str, str], pointer: str
) -> None:
    for route in ("/api/v1/events/", "/api/v1/deliveries/", "/api/v1/dead-letters/"):
        response = api.get(route, query)
        assert response.status_code == 400, route
        assert response.json()["errors"][0]["pointer"] == pointer


def _fill(endpoint_ids: list[str], application_id: int, events: int) -> None:
    """`events` events over 40 days, a delivery per endpoint each, two attempts per delivery,
    and a dead letter for every tenth delivery; then ANALYZE, as autovacuum would."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO deliveries_event (id, type, application_id, data, idempotency_key,
                request_hash, occurred_at, created_at)
            SELECT 'evt_fill' || lpad(g::text, 12, '0'), 'page.tick',
                   CASE WHEN g %% 10 = 0 THEN %s END, '{"n": 1}', NULL, '', t, t
            FROM generate_series(1, %s) g,
                 LATERAL (SELECT now() - interval '40 days' * (1 - g::float / %s) AS t) x
            """,
            [application_id, events, events],
        )
        cursor.execute(
            """
            INSERT INTO deliveries_delivery (event_id, endpoint_id, status, attempt_count,
                next_attempt_at, dispatched_at, retry_base, last_status_code, completed_at,
                created_at)
            SELECT e.id, ep, CASE WHEN random() < 0.1 THEN 'dead' ELSE 'succeeded' END, 2,
                   NULL, NULL, 0, 200, e.created_at, e.created_at
            FROM deliveries_event e, unnest(%s::text[]) ep
            WHERE e.id LIKE 'evt_fill%%'
            """,
            [endpoint_ids],
        )
        cursor.execute(
            """
            INSERT INTO deliveries_deliveryattempt (delivery_id, number, outcome, started_at,
                duration_ms, status_code, error, error_class, request_headers, request_body,
                request_body_bytes, response_headers, response_body)
            SELECT d.id, n, 'succeeded', d.created_at, 5.0, 200, '', '', '{}', '{}', 2, '{}', ''
            FROM deliveries_delivery d, generate_series(1, 2) n
            """
        )
        cursor.execute(
            """
            INSERT INTO deliveries_deadletter (delivery_id, endpoint_id, event_type, reason,
                last_status_code, created_at, replayed_at, replayed_by)
            SELECT d.id, d.endpoint_id, 'page.tick', 'HTTP 500', 500, d.created_at,
                   CASE WHEN d.id % 3 = 0 THEN d.created_at END, ''
            FROM deliveries_delivery d WHERE d.status = 'dead'
            """
        )
        for table in BIG_TABLES:
            cursor.execute(f"ANALYZE {table}")


def _whole_table_scans(plan: str) -> list[str]:
    """Seq scans of a big table that are not cut short by a LIMIT right above them (a LIMIT
    over a sort or an aggregate still reads every row below it)."""
    lines = plan.splitlines()

    def depth(line: str) -> int:
        return len(line) - len(line.lstrip(" ->"))

    found = []
    for i, line in enumerate(lines):
        if not any(f"Seq Scan on {table}" in line for table in BIG_TABLES):
            continue
        parent = next((p for p in reversed(lines[:i]) if depth(p) < depth(line)), "")
        if "Limit" not in parent:
            found.append(line.strip())
    return found


def _plans(
    client: APIClient | Client, path: str, params: dict[str, Any] | None = None
) -> list[tuple[str, str]]:
    """(query, plan) of every read of a big table the route made."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path, params or {})
    assert response.status_code == 200, (path, response.content[:300])
    plans = []
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            sql = query["sql"]
            if sql.lstrip().upper().startswith("SELECT") and any(t in sql for t in BIG_TABLES):
                cursor.execute("EXPLAIN " + sql)
                plans.append((sql, "\n".join(row[0] for row in cursor.fetchall())))
    return plans


def test_every_list_route_reads_an_index_range_of_a_month_of_rows(
    api: APIClient, admin_client: Client
) -> None:
    api.post("/api/v1/event-types/", {"name": "page.tick", "schema": {}}, format="json")
    application = Application.objects.create(uid="acme", name="Acme")
    endpoints = [
        api.post("/api/v1/endpoints/", {"url": f"http://127.0.0.1:9/{n}"}, format="json").json()[
            "id"
        ]
        for n in range(4)
    ]
    _fill(endpoints, application.pk, events=20_000)
    delivery = Delivery.objects.order_by("-id").first()
    assert delivery is not None
    event = Event.objects.order_by("-id").first()
    assert event is not None
    assert DeadLetter.objects.filter(replayed_at__isnull=True).exists()
    _, key = api_key_create(name="acme", scopes=ApiKey.Scope.values, application=application)
    limited = APIClient()
    limited.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    second_page = api.get("/api/v1/deliveries/", {"page_size": 5}).json()["next"]
    routes: list[tuple[APIClient | Client, str, dict[str, Any] | None]] = [
        (api, "/api/v1/events/", None),
        (api, "/api/v1/events/", {"type": "page.tick"}),
        (limited, "/api/v1/events/", None),
        (api, f"/api/v1/events/{event.pk}/", None),
        (api, "/api/v1/deliveries/", None),
        (api, _path(second_page), None),
        (api, "/api/v1/deliveries/", {"endpoint": endpoints[0]}),
        (api, "/api/v1/deliveries/", {"status": "dead"}),
        (api, "/api/v1/deliveries/", {"event": event.pk}),
        (api, f"/api/v1/deliveries/{delivery.pk}/attempts/", None),
        (api, "/api/v1/dead-letters/", None),
        (api, "/api/v1/dead-letters/", {"endpoint": endpoints[1]}),
        (admin_client, "/admin/deliveries/event/", None),
        (admin_client, "/admin/deliveries/event/", {"event_type__name__exact": "page.tick"}),
        (admin_client, "/admin/deliveries/delivery/", None),
        (admin_client, "/admin/deliveries/delivery/", {"status__exact": "dead"}),
        (admin_client, "/admin/deliveries/delivery/", {"endpoint__id__exact": endpoints[2]}),
        (admin_client, "/admin/deliveries/deadletter/", None),
        (admin_client, f"/admin/deliveries/delivery/{delivery.pk}/change/", None),
    ]
    for client, path, params in routes:
        plans = _plans(client, path, params)
        assert plans, path
        for sql, plan in plans:
            assert not _whole_table_scans(plan), (path, params, plan)
            # the admin's paginator counts at most EXACT_UP_TO + 1 rows (a LIMITed subquery)
            assert "COUNT(*)" not in sql.upper() or "LIMIT" in sql.upper(), (path, params, sql)
