"""The lists that grow with traffic: cursor pages, and query plans that read an index range.

The plan test fills the tables by SQL (tens of thousands of rows, analyzed), calls every list
route, and asks PostgreSQL to EXPLAIN each query the route ran: none may scan a whole table
that grows with traffic, and none may count one.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from bench.fill import fill_month
from deliveries.models import DeadLetter, Delivery, Event
from deliveries.services.endpoints import endpoints_disable_failing
from deliveries.services.retention import events_prune
from deliveries.services.sweeper import deliveries_requeue_stuck
from webhooks.models import ApiKey, Application
from webhooks.services import api_key_create

# the rows that wait (due, in flight, dead letters not replayed): an index on them makes a
# count of them O(backlog), and no seq scan is allowed anyway
WAITING = (
    """"status" = 'pending'""",
    """"status" = 'in_flight'""",
    '"replayed_at" IS NULL',
)
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


def test_events_and_deliveries_by_time_range(api: APIClient) -> None:
    api.post("/api/v1/event-types/", {"name": "page.tick", "schema": {}}, format="json")
    endpoint = api.post("/api/v1/endpoints/", {"url": "http://127.0.0.1:9/"}, format="json")
    with connection.cursor() as cursor:
        fill_month(
            cursor,
            endpoints=[endpoint.json()["id"]],
            event_type="page.tick",
            events=100,
            days=10,
            vacuum=False,
        )
    now = timezone.now()
    since, until = now - timedelta(days=6), now - timedelta(days=3)
    expected = set(
        Event.objects.filter(created_at__gte=since, created_at__lt=until).values_list(
            "id", flat=True
        )
    )
    assert 25 <= len(expected) <= 35
    query = {"since": since.isoformat(), "until": until.isoformat(), "page_size": 100}
    events = api.get("/api/v1/events/", query).json()["results"]
    assert {e["id"] for e in events} == expected
    deliveries = api.get("/api/v1/deliveries/", query).json()["results"]
    assert {d["event"] for d in deliveries} == expected
    assert api.get("/api/v1/events/", {"since": now.isoformat()}).json()["results"] == []
    for route in ("/api/v1/events/", "/api/v1/deliveries/"):
        response = api.get(route, {"until": "last tuesday"})
        assert response.status_code == 400
        assert response.json()["errors"][0]["pointer"] == "/until"


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
    """`events` events over 5 days, each day in its partition, a delivery per endpoint each,
    two attempts per delivery, a dead letter for every tenth delivery (a third of them
    replayed); then ANALYZE, as autovacuum would."""
    with connection.cursor() as cursor:
        fill_month(
            cursor,
            endpoints=endpoint_ids,
            event_type="page.tick",
            events=events,
            days=5,  # partitions big enough that the planner's choices are the large-table ones
            application_id=application_id,
            attempts=2,
            dead_every=10,
            replayed_every=3,
            data_filler=1,
            body_bytes=2,
            vacuum=False,
        )


def _whole_table_scans(plan: str) -> list[str]:
    """Seq scans of a big table, or of a partition of one that holds a full day's rows, that
    are not cut short by a LIMIT right above them, or above the Append of the partitions (a
    LIMIT over a sort or an aggregate still reads every row below).

    A partition with less than half the rows of its fullest sibling (an empty day ahead;
    today's, which holds only the hours since midnight UTC) is skipped: scanning it whole is
    the planner's right choice, and it made this test fail when run in the first hours of a UTC
    day (1,200 rows of today against 16,000 of a whole day)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, c.reltuples, max(s.reltuples) FROM pg_class c "
            "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
            "LEFT JOIN pg_inherits si ON si.inhparent = i.inhparent "
            "LEFT JOIN pg_class s ON s.oid = si.inhrelid "
            "WHERE c.relkind IN ('r', 'p') GROUP BY c.relname, c.reltuples"
        )
        small = {
            name
            for name, tuples, fullest in cursor.fetchall()
            if tuples < max(1000, 0.5 * (fullest or 0))
        }
    lines = plan.splitlines()

    def depth(line: str) -> int:
        return len(line) - len(line.lstrip(" ->"))

    found = []
    for i, line in enumerate(lines):
        match = re.search(r"Seq Scan on (\w+)", line)
        if not match or not match.group(1).startswith(BIG_TABLES):
            continue
        if match.group(1) not in BIG_TABLES and match.group(1) in small:
            continue
        parent, level = "", depth(line)
        for above in reversed(lines[:i]):  # the nearest node above, through the partitions' Append
            if depth(above) < level:
                parent, level = above, depth(above)
                if "Append" not in parent:
                    break
        if "Limit" not in parent:
            found.append(line.strip())
    return found


def _counts_mostly_waiting_rows(sql: str, plan: str) -> bool:
    """A count of waiting rows that are most of their table (dead letters not yet replayed,
    say): reading the table is then the cheapest way, and still O(what waits)."""
    if "COUNT(*)" not in sql.upper() or not any(waiting in sql for waiting in WAITING):
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reltuples FROM pg_class WHERE relkind IN ('r', 'p')")
        sizes = dict(cursor.fetchall())
    for match in re.finditer(r"Seq Scan on (\w+) .*?rows=(\d+)", plan):
        if int(match.group(2)) < sizes.get(match.group(1), 0) / 2:
            return False
    return True


def _plans(
    client: APIClient | Client, path: str, params: dict[str, Any] | None = None
) -> list[tuple[str, str]]:
    """(query, plan) of every read of a big table the route made."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path, params or {})
    assert response.status_code == 200, (path, response.content[:300])
    return _explain(queries.captured_queries)


def _explain(captured: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(query, plan) of every read or write of a big table among `captured` (EXPLAIN alone
    does not run a write)."""
    plans = []
    with connection.cursor() as cursor:
        for query in captured:
            sql = query["sql"]
            verb = sql.lstrip().split(" ", 1)[0].upper()
            if verb in ("SELECT", "UPDATE", "DELETE", "WITH") and any(t in sql for t in BIG_TABLES):
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
    a_day_ago = (timezone.now() - timedelta(days=1)).isoformat()
    two_days_ago = (timezone.now() - timedelta(days=2)).isoformat()
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
        (api, "/api/v1/events/", {"since": two_days_ago, "until": a_day_ago}),
        (api, "/api/v1/deliveries/", {"since": two_days_ago, "until": a_day_ago}),
        (api, "/api/v1/deliveries/", {"endpoint": endpoints[3], "since": a_day_ago}),
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
        (admin_client, f"/admin/deliveries/event/{event.pk}/change/", None),
        (admin_client, "/admin/metrics/", None),
        (api, "/api/v1/metrics/", {"window": "24h"}),
        (api, "/metrics", None),
    ]
    for client, path, params in routes:
        plans = _plans(client, path, params)
        assert plans, path
        for sql, plan in plans:
            if not _counts_mostly_waiting_rows(sql, plan):
                assert not _whole_table_scans(plan), (path, params, plan)
            # the admin's paginator counts at most EXACT_UP_TO + 1 rows (a LIMITed subquery);
            # the backlog gauges count what waits, through the partial indexes of waiting rows
            assert (
                "COUNT(*)" not in sql.upper()
                or "LIMIT" in sql.upper()
                or any(waiting in sql for waiting in WAITING)
            ), (path, params, sql, plan)

    # the beat jobs read what is due, not the month: the sweeper, the health job (it reads only
    # endpoints: their `failing_since`), retention's row-by-row part
    for job in (deliveries_requeue_stuck, endpoints_disable_failing, events_prune):
        with CaptureQueriesContext(connection) as queries:
            job()
        plans = _explain(queries.captured_queries)
        assert plans or job is endpoints_disable_failing, job
        for _sql, plan in plans:
            assert not _whole_table_scans(plan), (job, plan)
