"""Dead letters through the API: list with filters, replay one, replay in bulk; then delivered."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from deliveries.models import DeadLetter, Delivery, DeliveryAttempt
from tests.conftest import WorkerProcess, wait_until
from tests.sink import Sink


def _setup(api: APIClient, url: str, **endpoint: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    api.post("/api/v1/event-types/", {"name": "order.created", "schema": {}}, format="json")
    ep = api.post("/api/v1/endpoints/", {"url": url, **endpoint}, format="json").json()
    event = api.post(
        "/api/v1/events/", {"type": "order.created", "data": {"n": 1}}, format="json"
    ).json()
    return ep, event


def _kill(delivery: Delivery, status: str = "dead") -> DeadLetter:
    Delivery.objects.filter(pk=delivery.pk).update(status=status, attempt_count=3)
    return DeadLetter.objects.create(
        delivery=delivery, endpoint=delivery.endpoint, event_type="order.created", reason="HTTP 500"
    )


def test_list_filters_and_replay_one(api: APIClient) -> None:
    ep, event = _setup(api, "http://127.0.0.1:9/a")
    delivery = Delivery.objects.get(event_id=event["id"])
    dead_letter = _kill(delivery)
    assert [
        d["id"] for d in api.get("/api/v1/dead-letters/", {"endpoint": ep["id"]}).json()["results"]
    ] == [dead_letter.pk]
    assert api.get("/api/v1/dead-letters/", {"endpoint": "ep_other"}).json()["results"] == []
    assert api.get("/api/v1/dead-letters/", {"event_type": "nope"}).json()["results"] == []
    assert (
        api.get("/api/v1/dead-letters/", {"since": "2999-01-01T00:00:00Z"}).json()["results"] == []
    )
    assert api.get("/api/v1/dead-letters/", {"since": "yesterday"}).status_code == 400

    response = api.post(f"/api/v1/dead-letters/{dead_letter.pk}/replay/")
    assert response.status_code == 202
    assert response.json() == {"replayed": 1, "skipped_disabled": 0}
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert delivery.retry_base == 3  # the schedule restarts; old attempts stay
    dead_letter.refresh_from_db()
    assert dead_letter.replayed_at is not None
    assert dead_letter.replayed_by.startswith("api-key:")
    assert api.get("/api/v1/dead-letters/").json()["results"] == []
    assert [
        d["id"]
        for d in api.get("/api/v1/dead-letters/", {"include_replayed": "true"}).json()["results"]
    ] == [dead_letter.pk]
    again = api.post(f"/api/v1/dead-letters/{dead_letter.pk}/replay/")
    assert again.status_code == 400


def test_bulk_replay_by_filter_skips_disabled_endpoints(api: APIClient) -> None:
    api.post("/api/v1/event-types/", {"name": "order.created", "schema": {}}, format="json")
    a = api.post("/api/v1/endpoints/", {"url": "http://127.0.0.1:9/a"}, format="json").json()
    b = api.post("/api/v1/endpoints/", {"url": "http://127.0.0.1:9/b"}, format="json").json()
    for _ in range(3):
        api.post("/api/v1/events/", {"type": "order.created", "data": {}}, format="json")
    for delivery in Delivery.objects.all():
        _kill(delivery)
    api.patch(f"/api/v1/endpoints/{b['id']}/", {"enabled": False}, format="json")
    only_a = api.post("/api/v1/dead-letters/replay/", {"endpoint": a["id"]}, format="json")
    assert only_a.json() == {"replayed": 3, "skipped_disabled": 0}
    rest = api.post("/api/v1/dead-letters/replay/", {}, format="json")
    assert rest.json() == {"replayed": 0, "skipped_disabled": 3}


def test_replay_needs_the_replay_scope(make_api_client: Any, api: APIClient) -> None:
    _, event = _setup(api, "http://127.0.0.1:9/a")
    dead_letter = _kill(Delivery.objects.get(event_id=event["id"]))
    reader = make_api_client(["read"])
    assert reader.get("/api/v1/dead-letters/").status_code == 200
    assert reader.post(f"/api/v1/dead-letters/{dead_letter.pk}/replay/").status_code == 403


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_dead_delivery_replayed_after_the_consumer_recovers_is_delivered(
    api: APIClient, sink: Sink, celery_worker: WorkerProcess
) -> None:
    # given a delivery that died against a failing consumer (one attempt, no retries)
    sink.plan("x", 500)
    _, event = _setup(api, sink.url("x"), retry_schedule=[])
    dead_letter = wait_until(
        lambda: DeadLetter.objects.filter(delivery__event_id=event["id"]).first()
    )
    # when the consumer recovers and the dead letter is replayed
    sink.plan("x", 200)
    assert api.post(f"/api/v1/dead-letters/{dead_letter.pk}/replay/").status_code == 202
    # then it is delivered, and both attempts are kept
    wait_until(lambda: Delivery.objects.filter(event_id=event["id"], status="succeeded").exists())
    numbers = DeliveryAttempt.objects.filter(delivery__event_id=event["id"]).order_by("number")
    assert [(a.number, a.status_code) for a in numbers] == [(1, 500), (2, 200)]
    assert len(sink.requests("x")) == 2
