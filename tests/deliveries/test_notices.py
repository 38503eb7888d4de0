"""Failure notices (issue 16): delivery.dead, endpoint.failing, endpoint.recovered."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from deliveries.models import Event
from deliveries.services.notices import (
    DeadDelivery,
    notices_delivery_dead,
    notices_failing_thresholds,
    operational_type,
)
from tests.conftest import WorkerProcess, wait_until
from tests.sink import Sink
from webhooks.models import Endpoint
from webhooks.operational import NOTICE_SCHEMAS
from webhooks.services import endpoint_create

NOTICES = ["delivery.dead", "endpoint.failing", "endpoint.recovered"]


@pytest.fixture(autouse=True)
def notice_types(db: None) -> None:
    """The notices' event types, as their migration registers them (a transactional test before
    this one may have flushed them)."""
    for name in NOTICES:
        operational_type(name, *NOTICE_SCHEMAS[name])


def _dead(endpoint_id: str, n: int, event_type: str = "order.paid") -> DeadDelivery:
    return DeadDelivery(
        delivery_id=1000 + n,
        event_id=f"evt_{n}",
        event_type=event_type,
        endpoint_id=endpoint_id,
        attempts=3,
        last_status_code=500,
        reason="HTTP 500",
    )


def _notices(name: str) -> list[dict[str, Any]]:
    return [e.data for e in Event.objects.filter(event_type_id=name).order_by("id")]


@pytest.mark.django_db
def test_a_storm_of_dead_deliveries_sends_one_notice_then_counts_the_rest() -> None:
    watcher, _ = endpoint_create(url="http://127.0.0.1:9/ops", event_types=NOTICES)
    failing, _ = endpoint_create(url="http://127.0.0.1:9/down")
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(
        f"webhooks:notice:dead:{failing.pk}", f"webhooks:notice:dead-suppressed:{failing.pk}"
    )
    now = timezone.now()
    notices_delivery_dead([_dead(failing.pk, n) for n in range(5)], at=now)
    (first,) = _notices("delivery.dead")
    assert first["delivery_id"] == "1000"
    assert (first["endpoint_id"], first["suppressed"], first["attempts"]) == (failing.pk, 0, 3)
    # the interval passes (its key expires): the next notice says how many were not sent
    client.delete(f"webhooks:notice:dead:{failing.pk}")
    notices_delivery_dead([_dead(failing.pk, 9)], at=now)
    assert [n["suppressed"] for n in _notices("delivery.dead")] == [0, 4]
    # each went to the endpoint that subscribes to notices by name, and only to it
    assert {
        e.deliveries.get().endpoint_id for e in Event.objects.filter(event_type_id="delivery.dead")
    } == {watcher.pk}


@pytest.mark.django_db
def test_notices_of_notices_are_never_sent() -> None:
    endpoint_create(url="http://127.0.0.1:9/ops", event_types=NOTICES)
    failing, _ = endpoint_create(url="http://127.0.0.1:9/down")
    redis.Redis.from_url(settings.REDIS_URL).delete(f"webhooks:notice:dead:{failing.pk}")
    notices_delivery_dead([_dead(failing.pk, 1, event_type="delivery.dead")], at=timezone.now())
    assert _notices("delivery.dead") == []


@pytest.mark.django_db
def test_a_long_failure_run_is_announced_at_each_threshold_once(settings: Any) -> None:
    settings.WEBHOOKS_DISABLE_AFTER = 5 * 24 * 3600
    endpoint_create(url="http://127.0.0.1:9/ops", event_types=["endpoint.failing"])
    failing, _ = endpoint_create(url="http://127.0.0.1:9/down")
    since = timezone.now() - timedelta(hours=2)
    Endpoint.objects.filter(pk=failing.pk).update(failing_since=since)
    notices_failing_thresholds()
    notices_failing_thresholds()  # a second beat run sends nothing new
    (notice,) = _notices("endpoint.failing")
    assert (notice["endpoint_id"], notice["threshold"]) == (failing.pk, "1h")
    assert notice["disabled_after"] is not None
    Endpoint.objects.filter(pk=failing.pk).update(failing_since=since - timedelta(days=1))
    notices_failing_thresholds()
    assert sorted(n["threshold"] for n in _notices("endpoint.failing")) == ["1h", "1h", "24h"]


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_announces_failing_dead_and_recovered(
    api: APIClient, celery_worker: WorkerProcess, sink: Sink
) -> None:
    api.post("/api/v1/event-types/", {"name": "order.paid", "schema": {}}, format="json")
    ops = api.post(
        "/api/v1/endpoints/", {"url": sink.url("ops"), "event_types": NOTICES}, format="json"
    ).json()
    sink.plan("down", 500)
    down = api.post(
        "/api/v1/endpoints/",
        {"url": sink.url("down"), "event_types": ["order.paid"], "retry_schedule": [0]},
        format="json",
    ).json()
    redis.Redis.from_url(settings.REDIS_URL).delete(f"webhooks:notice:dead:{down['id']}")
    api.post("/api/v1/events/", {"type": "order.paid", "data": {"n": 1}}, format="json")
    received = sink.wait_for(2, "ops")
    kinds = {json.loads(r.body)["type"]: json.loads(r.body)["data"] for r in received}
    assert set(kinds) == {"endpoint.failing", "delivery.dead"}
    assert kinds["endpoint.failing"]["threshold"] == "started"
    assert kinds["delivery.dead"]["endpoint_id"] == down["id"]
    assert kinds["delivery.dead"]["attempts"] == 2
    # when it answers again, its recovery is announced
    sink.plan("down", 200)
    api.post("/api/v1/events/", {"type": "order.paid", "data": {"n": 2}}, format="json")
    wait_until(lambda: len(sink.requests("ops")) == 3, timeout=20)
    last = json.loads(sink.requests("ops")[-1].body)
    assert last["type"] == "endpoint.recovered"
    assert last["data"]["endpoint_id"] == down["id"]
    assert ops["id"] != down["id"]
