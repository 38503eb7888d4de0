"""Day partitions: where rows go, retention by dropping a day, and what is kept past it."""

from __future__ import annotations

import time
from datetime import UTC, timedelta
from typing import Any

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from bench.fill import fill_month
from deliveries.models import DeadLetter, Delivery, DeliveryAttempt, Event, IdempotencyKey
from deliveries.partition_keys import (
    DAY_SHIFT,
    bounds,
    claim_bounds,
    day_number,
    day_start,
    event_day,
    id_span,
)
from deliveries.services.ingest import deliveries_insert
from deliveries.services.partitions import partition_days, partitions_ensure, partitions_expire
from deliveries.services.retention import events_prune
from webhooks_project.identifiers import new_id


def _partition_of(table: str, column: str, value: object) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT tableoid::regclass::text FROM {table} WHERE {column} = %s",  # noqa: S608
            [value],
        )
        return str(cursor.fetchone()[0])


def _endpoints(api: APIClient, n: int) -> list[str]:
    api.post("/api/v1/event-types/", {"name": "page.tick", "schema": {}}, format="json")
    return [
        api.post("/api/v1/endpoints/", {"url": f"http://127.0.0.1:9/{i}"}, format="json").json()[
            "id"
        ]
        for i in range(n)
    ]


def test_an_event_and_its_deliveries_go_to_its_day(api: APIClient, admin_client: Any) -> None:
    endpoints = _endpoints(api, 2)
    event = api.post(
        "/api/v1/events/", {"type": "page.tick", "data": {}, "idempotency_key": "k1"}, format="json"
    ).json()
    today = timezone.now().astimezone(UTC).date()
    suffix = bounds(today).suffix
    assert _partition_of("deliveries_event", "id", event["id"]) == f"deliveries_event_{suffix}"
    deliveries = list(Delivery.objects.filter(event_id=event["id"]))
    assert len(deliveries) == 2
    for delivery in deliveries:
        assert delivery.pk >> DAY_SHIFT == day_number(today)
        assert delivery.pk < 2**53  # exact in JSON
        assert _partition_of("deliveries_delivery", "id", delivery.pk).endswith(suffix)
    # (event, endpoint) is unique although the table is partitioned
    with pytest.raises(IntegrityError), transaction.atomic():
        deliveries_insert(event_ids=[event["id"]], endpoint_ids=[endpoints[0]], now=timezone.now())
    # and the idempotency key per application, in its own table
    again = api.post(
        "/api/v1/events/", {"type": "page.tick", "data": {}, "idempotency_key": "k1"}, format="json"
    )
    assert again.json()["id"] == event["id"]
    assert IdempotencyKey.objects.get(key="k1").event_id == event["id"]
    # the admin finds an event by its id or by its key (through the keys' table)
    for term in ("k1", event["id"]):
        page = admin_client.get("/admin/deliveries/event/", {"q": term})
        assert event["id"] in page.content.decode()
    assert (
        event["id"]
        not in admin_client.get("/admin/deliveries/event/", {"q": "k2"}).content.decode()
    )

    # a delivery made later for an old event (an endpoint's backfill) goes to the event's day
    old = Event.objects.create(
        id=new_id("evt", int((timezone.now() - timedelta(days=3)).timestamp() * 1000)),
        event_type_id="page.tick",
        data={},
    )
    [late] = deliveries_insert(
        event_ids=[old.pk], endpoint_ids=[endpoints[1]], now=timezone.now()
    ).ids
    assert late >> DAY_SHIFT == event_day(old.pk) == day_number(today - timedelta(days=3))


def test_partitions_are_made_ahead_and_a_day_already_in_the_default_one_stays_there(
    api: APIClient,
) -> None:
    _endpoints(api, 1)
    today = timezone.now().astimezone(UTC).date()
    assert set(partition_days()) >= {today + timedelta(days=n) for n in range(8)}
    far = today + timedelta(days=12)
    stray = Event.objects.create(
        id=new_id("evt", int(day_start(far).timestamp() * 1000) + 5),
        event_type_id="page.tick",
        data={},
    )
    assert _partition_of("deliveries_event", "id", stray.pk) == "deliveries_event_default"
    made = partitions_ensure(ahead=14)
    assert far not in made
    assert today + timedelta(days=13) in made
    assert far not in partition_days()
    assert Event.objects.filter(pk=stray.pk).exists()


def test_a_day_past_retention_is_dropped_keeping_what_is_owed(api: APIClient, settings) -> None:
    settings.WEBHOOKS_RETENTION_DAYS = 30
    endpoints = _endpoints(api, 2)
    with connection.cursor() as cursor:
        fill_month(
            cursor,
            endpoints=endpoints,
            event_type="page.tick",
            events=800,
            days=40,
            attempts=2,
            dead_every=5,
            replayed_every=2,
            vacuum=False,
        )
    now = timezone.now()
    cutoff = now - timedelta(days=30)
    # an old delivery still owed (a replay of last week, not yet delivered), of a day that
    # goes (not "the oldest day": run just before midnight UTC, that one holds a few minutes)
    owed = (
        Delivery.objects.filter(created_at__lt=cutoff - timedelta(days=1), status="succeeded")
        .exclude(event__deliveries__status="dead")
        .order_by("id")
        .first()
    )
    assert owed is not None
    Delivery.objects.filter(pk=owed.pk).update(status="pending", completed_at=None)
    waiting = list(
        DeadLetter.objects.filter(
            replayed_at__isnull=True, created_at__lt=cutoff - timedelta(days=1)
        ).values_list("delivery_id", flat=True)
    )
    assert waiting
    recent_events = Event.objects.filter(created_at__gte=cutoff + timedelta(days=1)).count()
    recent_attempts = DeliveryAttempt.objects.filter(
        started_at__gte=cutoff + timedelta(days=1)
    ).count()

    done = partitions_expire(now=now)

    assert done["days"] >= 9
    assert all(day_start(day) + timedelta(days=1) > cutoff for day in partition_days())
    # what was owed is whole, in the default partitions: the event, all its deliveries, attempts
    assert Event.objects.filter(pk=owed.event_id).exists()
    assert Delivery.objects.filter(event_id=owed.event_id).count() == 2
    assert DeliveryAttempt.objects.filter(delivery__event_id=owed.event_id).count() == 4
    assert _partition_of("deliveries_delivery", "id", owed.pk) == "deliveries_delivery_default"
    # every waiting dead letter still has its delivery and event; no dead letter lost its delivery
    assert Delivery.objects.filter(pk__in=waiting).count() == len(waiting)
    assert not DeadLetter.objects.exclude(delivery_id__in=Delivery.objects.values("id")).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM deliveries_event_default")
        assert done["events_kept"] == cursor.fetchone()[0] > len(waiting) // 2
    assert done["events_dropped"] > 0
    # the days within retention are untouched
    assert Event.objects.filter(created_at__gte=cutoff + timedelta(days=1)).count() == recent_events
    assert (
        DeliveryAttempt.objects.filter(started_at__gte=cutoff + timedelta(days=1)).count()
        == recent_attempts
    )

    # once the owed delivery is done (long enough ago), the row-by-row prune takes its event;
    # events with a dead letter waiting stay
    Delivery.objects.filter(event_id=owed.event_id).update(
        status="succeeded", completed_at=cutoff - timedelta(days=1)
    )
    assert events_prune() >= 1
    assert not Event.objects.filter(pk=owed.event_id).exists()
    assert not DeliveryAttempt.objects.filter(delivery_id=owed.pk).exists()
    assert Delivery.objects.filter(pk__in=waiting).count() == len(waiting)


@pytest.mark.django_db(transaction=True)  # the other session must see the partitions
def test_a_drop_that_cannot_have_its_lock_at_once_waits_for_the_next_run(
    api: APIClient, settings
) -> None:
    # given a day past retention, and another session reading the deliveries meanwhile
    settings.WEBHOOKS_RETENTION_DAYS = 30
    endpoints = _endpoints(api, 1)
    with connection.cursor() as cursor:
        fill_month(
            cursor, endpoints=endpoints, event_type="page.tick", events=100, days=35, vacuum=False
        )
    db = connection.settings_dict
    dsn = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    before = partition_days()
    with psycopg.connect(dsn) as other:
        other.execute("SET lock_timeout = '10s'")
        other.execute("SELECT 1 FROM deliveries_delivery LIMIT 1")  # holds its lock until commit
        # when retention runs, it gives up after its lock timeout instead of stalling everyone
        started = time.monotonic()
        assert partitions_expire()["days"] == 0
        assert time.monotonic() - started < 10
        assert partition_days() == before
    # and the next run, with nobody in the way, drops the days
    assert partitions_expire()["days"] >= 4


def test_queries_by_delivery_id_are_bounded_to_those_days() -> None:
    # pure: the bounds that let the claim and the recorder plan a few partitions, not all
    today = timezone.now().astimezone(UTC).date()
    day = day_number(today)
    ids = [(day << DAY_SHIFT) + 5, ((day - 2) << DAY_SHIFT) + 9]
    b = claim_bounds(ids)
    assert (b["low"], b["high"]) == (min(ids), max(ids) + 1) == tuple(id_span(ids).values())
    # the events of those days, and a day to either side
    assert b["first_event"] == bounds(today - timedelta(days=3)).events[0]
    assert b["after_event"] == bounds(today + timedelta(days=1)).events[1]
    # deliveries from before partitioning: their events may be of any day
    legacy = claim_bounds([42, ids[0]])
    assert (legacy["first_event"], legacy["after_event"]) == ("", "~")
    assert "" < new_id("evt") < "~"


def test_the_legacy_partition_goes_once_all_of_it_is_past_retention_keeping_what_is_owed(
    api: APIClient, settings
) -> None:
    # given deliveries from before partitioning (small ids), all made 40 days ago, one still owed
    settings.WEBHOOKS_RETENTION_DAYS = 30
    [endpoint] = _endpoints(api, 1)
    old = timezone.now() - timedelta(days=40)
    events = [
        Event.objects.create(
            id=new_id("evt", int(old.timestamp() * 1000) + n),
            event_type_id="page.tick",
            data={},
            created_at=old,
        )
        for n in range(3)
    ]
    for n, (event, status) in enumerate(
        zip(events, ("succeeded", "succeeded", "dead"), strict=True)
    ):
        Delivery.objects.create(
            id=1000 + n,
            event=event,
            endpoint_id=endpoint,
            status=status,
            completed_at=old,
            created_at=old,
        )
        DeliveryAttempt.objects.create(
            delivery_id=1000 + n, number=1, outcome="failed", started_at=old, duration_ms=1
        )
    assert _partition_of("deliveries_delivery", "id", 1000) == "deliveries_delivery_legacy"

    done = partitions_expire()

    # then the legacy partitions are gone, and the owed delivery with its attempt is kept
    assert done.get("legacy") == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('deliveries_delivery_legacy')")
        assert cursor.fetchone()[0] is None
    assert list(Delivery.objects.values_list("id", flat=True)) == [1002]
    assert _partition_of("deliveries_delivery", "id", 1002) == "deliveries_delivery_default"
    assert DeliveryAttempt.objects.filter(delivery_id=1002).count() == 1
    assert not DeliveryAttempt.objects.filter(delivery_id__in=[1000, 1001]).exists()
