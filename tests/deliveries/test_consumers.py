"""Misbehaving consumers, through a real worker: each outcome handled as the retry policy says."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from deliveries.models import DeadLetter, Delivery, DeliveryAttempt
from tests.conftest import WorkerProcess, wait_idle, wait_until
from tests.sink import Sink
from webhooks.models import Endpoint

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def post(api: APIClient, celery_worker: WorkerProcess) -> Any:
    api.post("/api/v1/event-types/", {"name": "order.created", "schema": {}}, format="json")

    def make(url: str, **endpoint: Any) -> Delivery:
        ep = api.post("/api/v1/endpoints/", {"url": url, **endpoint}, format="json").json()
        event = api.post(
            "/api/v1/events/", {"type": "order.created", "data": {"n": 1}}, format="json"
        ).json()
        return Delivery.objects.get(event_id=event["id"], endpoint_id=ep["id"])

    return make


def _finished(delivery: Delivery) -> Delivery:
    return wait_until(
        lambda: Delivery.objects.filter(
            pk=delivery.pk, status__in=["succeeded", "failed", "dead"]
        ).first(),
        timeout=30,
    )


def test_a_consumer_hanging_past_the_timeout_is_a_retried_timeout_and_others_still_flow(
    post: Any, sink: Sink
) -> None:
    sink.plan("hang", 200, delay=6)
    hanging = post(sink.url("hang"), timeout_seconds=1, retry_schedule=[0])
    healthy = post(sink.url("fine"))
    assert _finished(healthy).status == "succeeded"  # the worker stays responsive
    done = _finished(hanging)
    assert done.status == "dead"
    attempts = list(DeliveryAttempt.objects.filter(delivery=done))
    assert [a.error_class for a in attempts] == ["read_timeout", "read_timeout"]
    assert all(a.duration_ms < 3000 for a in attempts)


def test_a_connection_reset_is_retried_then_dead(post: Any, sink: Sink) -> None:
    sink.plan("reset", 200, mode="reset")
    done = _finished(post(sink.url("reset"), retry_schedule=[0]))
    assert done.status == "dead"
    assert {a.error_class for a in DeliveryAttempt.objects.filter(delivery=done)} == {"reset"}


def test_a_slow_consumer_within_the_timeout_succeeds(post: Any, sink: Sink) -> None:
    sink.plan("slow", 200, delay=1.5)
    done = _finished(post(sink.url("slow"), timeout_seconds=5))
    assert done.status == "succeeded"
    assert DeliveryAttempt.objects.get(delivery=done).duration_ms >= 1400


def test_a_50_mb_answer_is_not_buffered(post: Any, sink: Sink) -> None:
    sink.plan("huge", 200, mode="huge")
    done = _finished(post(sink.url("huge")))
    assert done.status == "succeeded"
    attempt = DeliveryAttempt.objects.get(delivery=done)
    assert len(attempt.response_body) == 4096
    assert attempt.duration_ms < 5000


def test_429_with_retry_after_waits_as_asked(post: Any, sink: Sink) -> None:
    sink.plan("busy", 429, 200, **{"Retry-After": "2"})
    done = _finished(post(sink.url("busy"), retry_schedule=[0, 10]))
    assert done.status == "succeeded"
    first, second = sink.requests("busy")
    assert second.at - first.at >= 1.9


def test_410_disables_the_endpoint_and_ends_its_pending_deliveries(
    post: Any, sink: Sink, api: APIClient
) -> None:
    sink.plan("gone", 410)
    done = _finished(post(sink.url("gone"), retry_schedule=[5]))
    assert done.status == "failed"
    endpoint = Endpoint.objects.get(pk=done.endpoint_id)
    assert endpoint.enabled is False
    assert "410" in endpoint.disabled_reason
    assert DeadLetter.objects.filter(delivery=done).exists()
    # a later event is not fanned out to the disabled endpoint
    api.post("/api/v1/events/", {"type": "order.created", "data": {}}, format="json")
    wait_idle()
    assert Delivery.objects.filter(endpoint=endpoint).count() == 1
    assert len(sink.requests("gone")) == 1
