"""End to end with real services: API -> PostgreSQL -> Redis -> a Celery worker -> an HTTP sink."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from rest_framework.test import APIClient
from standardwebhooks import Webhook

from deliveries.models import Delivery, DeliveryAttempt
from tests.conftest import WorkerProcess, wait_idle, wait_until
from tests.sink import Sink

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCHEMA = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}


@pytest.fixture
def order_type(api: APIClient) -> None:
    response = api.post(
        "/api/v1/event-types/", {"name": "order.created", "schema": SCHEMA}, format="json"
    )
    assert response.status_code == 201


def _endpoint(api: APIClient, url: str, **fields: Any) -> dict[str, Any]:
    response = api.post("/api/v1/endpoints/", {"url": url, **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _post_event(api: APIClient, **fields: Any) -> dict[str, Any]:
    body = {"type": "order.created", "data": {"id": "o-1", "total": 12.5}, **fields}
    response = api.post("/api/v1/events/", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def _verify(secret: str, request: Any) -> dict[str, Any]:
    return Webhook(secret).verify(request.body, request.headers)


def test_one_event_reaches_three_endpoints_once_each_correctly_signed(
    api: APIClient, order_type: None, sink: Sink, celery_worker: WorkerProcess
) -> None:
    # given three subscribed endpoints and one subscribed to something else
    api.post("/api/v1/event-types/", {"name": "user.created", "schema": {}}, format="json")
    endpoints = [_endpoint(api, sink.url(f"ep{i}")) for i in range(3)]
    _endpoint(api, sink.url("other"), event_types=["user.created"])
    # when one event is posted
    posted_at = time.time()
    event = _post_event(api)
    assert event["deliveries"] == 3
    # then each endpoint receives exactly one request, and it verifies with the reference library
    for i, endpoint in enumerate(endpoints):
        (request,) = sink.wait_for(1, f"ep{i}")
        assert request.at - posted_at < 5
        assert request.headers["webhook-id"] == event["id"]
        assert request.headers["content-type"] == "application/json"
        payload = _verify(endpoint["secret"], request)
        assert payload["type"] == "order.created"
        assert payload["data"] == {"id": "o-1", "total": 12.5}
        assert payload["timestamp"].endswith("Z")
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 3)
    wait_idle()
    assert len(sink.requests()) == 3
    assert sink.requests("other") == []
    # and every attempt is visible through the API
    delivery = Delivery.objects.get(endpoint_id=endpoints[0]["id"])
    attempts = api.get(f"/api/v1/deliveries/{delivery.pk}/attempts/").json()["results"]
    assert len(attempts) == 1
    assert attempts[0]["status_code"] == 200
    assert attempts[0]["outcome"] == "succeeded"
    assert attempts[0]["response_body"] == '{"ok": true}'
    assert attempts[0]["request_headers"]["webhook-id"] == event["id"]
    # the signature as sent is in the log too: the stored headers verify the stored body
    (sent,) = sink.requests("ep0")
    assert attempts[0]["request_headers"]["webhook-signature"] == sent.headers["webhook-signature"]
    Webhook(endpoints[0]["secret"]).verify(
        attempts[0]["request_body"].encode(), attempts[0]["request_headers"]
    )
    # the body the attempt recorded is byte for byte what the consumer got
    (received,) = sink.requests("ep0")
    assert attempts[0]["request_body"] == received.body.decode()
    assert attempts[0]["request_body_bytes"] == len(received.body)


def test_a_failing_endpoint_is_retried_until_it_succeeds(
    api: APIClient, order_type: None, sink: Sink, celery_worker: WorkerProcess
) -> None:
    # given an endpoint that fails twice (500, 503) then answers 200, with 1 s retry delays
    sink.plan("flaky", 500, 503, 200)
    endpoint = _endpoint(api, sink.url("flaky"), retry_schedule=[1, 1, 1])
    # when an event is posted
    event = _post_event(api)
    # then three requests arrive, the same webhook-id each time, each freshly signed
    requests = sink.wait_for(3, "flaky", timeout=30)
    assert len(requests) == 3
    assert {r.headers["webhook-id"] for r in requests} == {event["id"]}
    for request in requests:
        _verify(endpoint["secret"], request)
    assert requests[1].at - requests[0].at >= 0.8  # the schedule's delay (1 s, jitter 10%)
    delivery = wait_until(
        lambda: Delivery.objects.filter(event_id=event["id"], status="succeeded").first()
    )
    assert delivery.attempt_count == 3
    attempts = list(DeliveryAttempt.objects.filter(delivery=delivery).order_by("number"))
    assert [(a.number, a.status_code, a.outcome) for a in attempts] == [
        (1, 500, "retrying"),
        (2, 503, "retrying"),
        (3, 200, "succeeded"),
    ]


def test_exhausted_retries_end_dead_with_a_dead_letter(
    api: APIClient, order_type: None, sink: Sink, celery_worker: WorkerProcess
) -> None:
    sink.plan("down", 500)
    endpoint = _endpoint(api, sink.url("down"), retry_schedule=[0])
    event = _post_event(api)
    delivery = wait_until(
        lambda: Delivery.objects.filter(event_id=event["id"], status="dead").first()
    )
    assert delivery.attempt_count == 2
    assert len(sink.requests("down")) == 2
    (dead_letter,) = delivery.dead_letters.all()
    assert dead_letter.endpoint_id == endpoint["id"]
    assert "HTTP 500" in dead_letter.reason


def test_a_4xx_fails_at_once_without_retry(
    api: APIClient, order_type: None, sink: Sink, celery_worker: WorkerProcess
) -> None:
    sink.plan("reject", 400)
    _endpoint(api, sink.url("reject"), retry_schedule=[0, 0])
    event = _post_event(api)
    delivery = wait_until(
        lambda: Delivery.objects.filter(event_id=event["id"], status="failed").first()
    )
    wait_idle()
    assert len(sink.requests("reject")) == 1
    assert delivery.attempt_count == 1
    assert json.loads(sink.requests("reject")[0].body)["type"] == "order.created"


def test_custom_headers_are_sent_but_not_stored(
    api: APIClient, order_type: None, sink: Sink, celery_worker: WorkerProcess
) -> None:
    _endpoint(api, sink.url("hdr"), headers={"Authorization": "Bearer partner-token"})
    event = _post_event(api)
    (request,) = sink.wait_for(1, "hdr")
    assert request.headers["authorization"] == "Bearer partner-token"
    attempt = wait_until(
        lambda: DeliveryAttempt.objects.filter(delivery__event_id=event["id"]).first()
    )
    assert attempt.request_headers["authorization"] == "[redacted]"
