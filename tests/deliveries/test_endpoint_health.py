"""Endpoint health: a run of failures disables the endpoint with a notice; re-enable, replay
what it missed; retention prunes fully delivered events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from deliveries.models import DeadLetter, Delivery, DeliveryAttempt, Event
from deliveries.services.endpoints import endpoints_disable_failing
from deliveries.services.retention import events_prune
from schemas_app.services import event_type_create
from tests.conftest import WorkerProcess, wait_until
from tests.sink import Sink
from webhooks.models import Endpoint
from webhooks.services import application_create, endpoint_create
from webhooks_project.identifiers import new_id


@pytest.fixture
def acme(db: None) -> Any:
    event_type_create(name="order.created", schema={"type": "object"})
    event_type_create(name="order.paid", schema={"type": "object"})
    return application_create(uid="acme", name="Acme")


def test_an_endpoint_failing_longer_than_the_limit_is_disabled_with_a_notice(
    acme: Any, settings: Any
) -> None:
    settings.WEBHOOKS_DISABLE_AFTER = 5 * 24 * 3600
    now = timezone.now()
    failing, _ = endpoint_create(url="http://127.0.0.1:9/failing", application=acme)
    recent, _ = endpoint_create(url="http://127.0.0.1:9/recent", application=acme)
    listener, _ = endpoint_create(
        url="http://127.0.0.1:9/ops", application=acme, event_types=["endpoint.disabled"]
    )
    everything, _ = endpoint_create(url="http://127.0.0.1:9/all", application=acme)
    Endpoint.objects.filter(pk=failing.pk).update(failing_since=now - timedelta(days=6))
    Endpoint.objects.filter(pk=recent.pk).update(failing_since=now - timedelta(days=1))
    event = Event.objects.create(event_type_id="order.created", application=acme, data={})
    pending = Delivery.objects.create(event=event, endpoint=failing)

    # when the health job runs
    assert endpoints_disable_failing() == [failing.pk]

    # then only the endpoint failing for longer than the limit is disabled, with why and when
    failing.refresh_from_db()
    assert failing.enabled is False
    assert failing.disabled_reason.startswith("every attempt failed since")
    assert failing.disabled_at is not None
    assert Endpoint.objects.get(pk=recent.pk).enabled is True
    # its pending delivery ends as failed, in the dead-letter queue
    pending.refresh_from_db()
    assert pending.status == "failed"
    assert DeadLetter.objects.get(delivery=pending).reason.startswith("endpoint disabled:")
    # and `endpoint.disabled` goes to the endpoint that subscribed to it, not to "all types"
    notice = Event.objects.get(event_type_id="endpoint.disabled")
    assert notice.application == acme
    assert notice.data["endpoint_id"] == failing.pk
    assert notice.data["reason"] == failing.disabled_reason
    assert notice.data["failing_since"] is not None
    assert set(notice.deliveries.values_list("endpoint_id", flat=True)) == {listener.pk}
    assert everything.pk not in set(notice.deliveries.values_list("endpoint_id", flat=True))
    # a second run changes nothing and emits nothing new
    assert endpoints_disable_failing() == []
    assert Event.objects.filter(event_type_id="endpoint.disabled").count() == 1


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_real_attempts_start_and_end_the_failure_run(
    api: APIClient, celery_worker: WorkerProcess, sink: Sink
) -> None:
    sink.plan("flaky", 500, 200)
    api.post("/api/v1/event-types/", {"name": "order.created", "schema": {}}, format="json")
    ep = api.post(
        "/api/v1/endpoints/", {"url": sink.url("flaky"), "retry_schedule": [2]}, format="json"
    ).json()
    api.post("/api/v1/events/", {"type": "order.created", "data": {}}, format="json")
    # the first attempt fails: the run starts
    since = wait_until(lambda: Endpoint.objects.get(pk=ep["id"]).failing_since, timeout=20)
    first = DeliveryAttempt.objects.get(number=1)
    assert since == first.started_at
    # the retry succeeds: the run ends
    wait_until(lambda: Delivery.objects.filter(status="succeeded").exists(), timeout=20)
    assert Endpoint.objects.get(pk=ep["id"]).failing_since is None
    assert api.get(f"/api/v1/endpoints/{ep['id']}/").json()["failing_since"] is None


def test_410_emits_endpoint_disabled(acme: Any) -> None:
    from deliveries.services.endpoints import endpoint_disable_with_notice

    gone, _ = endpoint_create(url="http://127.0.0.1:9/gone", application=acme)
    assert endpoint_disable_with_notice(endpoint_id=gone.pk, reason="HTTP 410 Gone")
    notice = Event.objects.get(event_type_id="endpoint.disabled")
    assert notice.data["reason"] == "HTTP 410 Gone"
    assert not endpoint_disable_with_notice(endpoint_id=gone.pk, reason="again")


def test_enable_with_replay_missed_sends_dead_letters_and_events_accepted_while_off(
    api: APIClient,
) -> None:
    api.post("/api/v1/event-types/", {"name": "order.created", "schema": {}}, format="json")
    api.post("/api/v1/event-types/", {"name": "order.paid", "schema": {}}, format="json")
    ep = api.post(
        "/api/v1/endpoints/",
        {"url": "http://127.0.0.1:9/x", "event_types": ["order.created"]},
        format="json",
    ).json()
    # given a delivery that died, then the endpoint disabled
    first = api.post("/api/v1/events/", {"type": "order.created", "data": {}}, format="json")
    delivery = Delivery.objects.get(event_id=first.json()["id"])
    Delivery.objects.filter(pk=delivery.pk).update(status="dead", attempt_count=8)
    DeadLetter.objects.create(
        delivery=delivery, endpoint_id=ep["id"], event_type="order.created", reason="HTTP 500"
    )
    api.post(f"/api/v1/endpoints/{ep['id']}/enable/", {}, format="json")  # no-op while enabled
    Endpoint.objects.filter(pk=ep["id"]).update(
        enabled=False, disabled_at=timezone.now(), disabled_reason="HTTP 410 Gone"
    )
    # and events accepted while it was off: two it subscribes to, one it does not
    for event_type in ("order.created", "order.created", "order.paid"):
        api.post("/api/v1/events/", {"type": event_type, "data": {}}, format="json")
    assert Delivery.objects.filter(endpoint_id=ep["id"]).count() == 1

    # when it is re-enabled with replay_missed
    response = api.post(
        f"/api/v1/endpoints/{ep['id']}/enable/", {"replay_missed": True}, format="json"
    )

    # then the dead letter is replayed and the two missed events get deliveries
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["was_disabled"], body["replayed"], body["backfilled"]) == (True, 1, 2)
    assert body["endpoint"]["enabled"] is True
    assert body["endpoint"]["disabled_reason"] == ""
    deliveries = Delivery.objects.filter(endpoint_id=ep["id"])
    assert deliveries.count() == 3
    assert set(deliveries.values_list("status", flat=True)) == {"pending"}
    # the backfilled rows wait for the sweeper (no message was published for them)
    assert deliveries.filter(dispatched_at__isnull=True).count() == 2
    # doing it again finds nothing more to send
    again = api.post(
        f"/api/v1/endpoints/{ep['id']}/enable/", {"replay_missed": True}, format="json"
    ).json()
    assert (again["was_disabled"], again["replayed"], again["backfilled"]) == (False, 0, 0)


def test_enable_needs_the_endpoints_scope(make_api_client: Any, acme: Any) -> None:
    endpoint, _ = endpoint_create(url="http://127.0.0.1:9/x")
    reader = make_api_client(["read"])
    assert reader.post(f"/api/v1/endpoints/{endpoint.pk}/enable/").status_code == 403
    assert reader.post("/api/v1/endpoints/ep_nope/enable/").status_code in (403, 404)


def test_admin_re_enables_and_replays_what_an_endpoint_missed(
    admin_client: Client, acme: Any
) -> None:
    endpoint, _ = endpoint_create(url="http://127.0.0.1:9/x", application=acme)
    event = Event.objects.create(event_type_id="order.created", application=acme, data={})
    delivery = Delivery.objects.create(event=event, endpoint=endpoint, status="failed")
    DeadLetter.objects.create(
        delivery=delivery, endpoint=endpoint, event_type="order.created", reason="disabled"
    )
    Endpoint.objects.filter(pk=endpoint.pk).update(
        enabled=False, disabled_at=timezone.now() - timedelta(minutes=1), disabled_reason="x"
    )
    Event.objects.create(event_type_id="order.created", application=acme, data={"missed": 1})
    response = admin_client.post(
        "/admin/webhooks/endpoint/",
        {"action": "enable_and_replay_missed", "_selected_action": [endpoint.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"Re-enabled 1 endpoints. Replayed 1 dead letters; 1 events missed" in response.content
    assert Endpoint.objects.get(pk=endpoint.pk).enabled is True
    assert Delivery.objects.filter(endpoint=endpoint, status="pending").count() == 2
    assert DeadLetter.objects.get(delivery=delivery).replayed_by == "admin:admin"


def test_admin_replays_all_dead_letters_of_an_endpoint(admin_client: Client, acme: Any) -> None:
    endpoint, _ = endpoint_create(url="http://127.0.0.1:9/x")
    other, _ = endpoint_create(url="http://127.0.0.1:9/y")
    for target in (endpoint, endpoint, other):
        event = Event.objects.create(event_type_id="order.created", data={})
        delivery = Delivery.objects.create(event=event, endpoint=target, status="dead")
        DeadLetter.objects.create(
            delivery=delivery, endpoint=target, event_type="order.created", reason="HTTP 500"
        )
    response = admin_client.post(
        "/admin/webhooks/endpoint/",
        {"action": "replay_dead_letters", "_selected_action": [endpoint.pk]},
        follow=True,
    )
    assert b"Replayed 2 deliveries" in response.content
    assert DeadLetter.objects.filter(replayed_at__isnull=True).count() == 1


def test_prune_deletes_only_old_fully_delivered_events(acme: Any, settings: Any) -> None:
    # events of days that have no partition (before this database was made) sit in the default
    # partition: those `events_prune` deletes row by row (whole days go by partitions_expire)
    settings.WEBHOOKS_RETENTION_DAYS = 30
    old = timezone.now() - timedelta(days=40)
    endpoint, _ = endpoint_create(url="http://127.0.0.1:9/x")

    def event(status: str, created_at: Any, completed_at: Any) -> Event:
        e = Event.objects.create(
            id=new_id("evt", int(created_at.timestamp() * 1000)),
            event_type_id="order.created",
            data={},
            created_at=created_at,
        )
        d = Delivery.objects.create(
            event=e, endpoint=endpoint, status=status, completed_at=completed_at
        )
        DeliveryAttempt.objects.create(
            delivery=d, number=1, outcome="succeeded", started_at=created_at, duration_ms=1
        )
        DeadLetter.objects.create(
            delivery=d, endpoint=endpoint, event_type="x", reason="r", replayed_at=old
        )
        return e

    gone = [event("succeeded", old, old) for _ in range(3)]
    kept_dead = event("dead", old, old)
    kept_recent = event("succeeded", timezone.now(), timezone.now())
    kept_late = event("succeeded", old, timezone.now())  # finished inside the window
    no_deliveries = Event.objects.create(
        id=new_id("evt", int(old.timestamp() * 1000)),
        event_type_id="order.created",
        data={},
        created_at=old,
    )

    assert events_prune(batch_size=2) == 4  # batches of two: three passes

    remaining = set(Event.objects.values_list("id", flat=True))
    assert remaining == {kept_dead.pk, kept_recent.pk, kept_late.pk}
    assert not Delivery.objects.filter(event_id__in=[e.pk for e in gone]).exists()
    assert no_deliveries.pk not in remaining
    assert DeliveryAttempt.objects.count() == 3
    assert DeadLetter.objects.count() == 3
    assert events_prune() == 0


def test_the_sweeper_paces_a_failing_endpoints_backlog(acme: Any, settings: Any) -> None:
    from deliveries.services.sweeper import deliveries_requeue_stuck

    settings.WEBHOOKS_FAILING_ENDPOINT_BATCH = 100
    healthy, _ = endpoint_create(url="http://127.0.0.1:9/ok")
    failing, _ = endpoint_create(url="http://127.0.0.1:9/down")
    Endpoint.objects.filter(pk=failing.pk).update(failing_since=timezone.now())
    past = timezone.now() - timedelta(seconds=5)
    events = Event.objects.bulk_create(
        Event(event_type_id="order.created", data={"n": n}) for n in range(250)
    )
    Delivery.objects.bulk_create(
        Delivery(event=e, endpoint=failing, next_attempt_at=past, dispatched_at=None)
        for e in events
    )
    Delivery.objects.bulk_create(
        Delivery(event=e, endpoint=healthy, next_attempt_at=past, dispatched_at=None)
        for e in events[:50]
    )
    # one sweep publishes everything due for the healthy endpoint, 100 for the failing one
    assert deliveries_requeue_stuck()["published"] == 150
    assert Delivery.objects.filter(endpoint=healthy, dispatched_at__isnull=True).count() == 0
    assert Delivery.objects.filter(endpoint=failing, dispatched_at__isnull=True).count() == 150
    # once it succeeds again, the next sweep sends the rest
    Endpoint.objects.filter(pk=failing.pk).update(failing_since=None)
    assert deliveries_requeue_stuck()["published"] == 150
