"""Recording finished attempts against the real database, when the world changed meanwhile."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.utils import timezone

from deliveries.models import Delivery, DeliveryAttempt, Event
from deliveries.sender import Job
from deliveries.services import attempts_record, deliveries_claim, deliveries_dispatch
from schemas_app.services import event_type_create
from tests.conftest import wait_until
from webhooks import transport
from webhooks.services import application_create, endpoint_create

pytestmark = pytest.mark.django_db(transaction=True)  # the foreign keys are checked at COMMIT


def _claimed(count: int) -> list[Job]:
    event_type_create(name="order.created", schema={"type": "object"})
    acme = application_create(uid="acme", name="Acme")
    deliveries = []
    for n in range(count):
        endpoint, _ = endpoint_create(url=f"http://127.0.0.1:9/{n}", application=acme)
        event = Event.objects.create(event_type_id="order.created", application=acme, data={})
        deliveries.append(Delivery.objects.create(event=event, endpoint=endpoint))
    claims = deliveries_claim(delivery_ids=[d.pk for d in deliveries], now=timezone.now())
    assert len(claims) == count
    return [
        Job(
            claim=claim,
            started_at=time.time(),
            result=transport.TransportResult(status_code=200, duration_ms=3.0),
        )
        for claim in sorted(claims, key=lambda c: c.delivery_id)
    ]


def test_a_delivery_deleted_while_in_flight_does_not_stop_the_rest_of_its_batch(
    caplog: Any,
) -> None:
    # given three deliveries in flight, one of which is deleted with its endpoint meanwhile
    jobs = _claimed(3)
    gone = jobs[1].claim
    Delivery.objects.get(pk=gone.delivery_id).endpoint.delete()

    # when the batch of their finished attempts is recorded
    attempts_record(jobs)

    # then the two that still exist are recorded and succeeded; the gone one is named in the log
    kept = [jobs[0].claim.delivery_id, jobs[2].claim.delivery_id]
    assert sorted(DeliveryAttempt.objects.values_list("delivery_id", flat=True)) == kept
    assert set(Delivery.objects.values_list("status", flat=True)) == {"succeeded"}
    assert f"[{gone.delivery_id}]" in caplog.text


def test_a_batch_recorded_twice_keeps_one_attempt_row_per_try() -> None:
    # given a batch whose first write committed but whose answer was lost
    jobs = _claimed(2)
    attempts_record(jobs)

    # when the recorder writes it again
    attempts_record(jobs)

    # then each try still has exactly one attempt row
    assert DeliveryAttempt.objects.count() == 2


def test_a_secret_no_key_decrypts_ends_as_a_retried_attempt_not_a_stuck_claim(
    settings: Any, local_sender: None
) -> None:
    # given a delivery whose endpoint secret is under a key that is no longer configured
    event_type_create(name="order.created", schema={"type": "object"})
    endpoint, _ = endpoint_create(url="http://127.0.0.1:9/x")
    event = Event.objects.create(event_type_id="order.created", data={})
    delivery = Delivery.objects.create(event=event, endpoint=endpoint)
    settings.WEBHOOKS_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    # when it is dispatched
    deliveries_dispatch(delivery_ids=[delivery.pk])
    # then the attempt is recorded with the reason and the delivery waits for its retry
    wait_until(lambda: DeliveryAttempt.objects.filter(delivery=delivery).exists())
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    assert attempt.error_class == "secret_unreadable"
    wait_until(lambda: Delivery.objects.get(pk=delivery.pk).status == "pending")


def test_every_recorded_attempt_is_one_structured_log_line_without_body_or_secrets(
    caplog: Any,
) -> None:
    import json
    import logging

    from webhooks_project.logs import JsonFormatter

    jobs = _claimed(2)
    jobs[1].result = transport.TransportResult(
        status_code=503, duration_ms=7.5, body="secret-looking response body"
    )
    jobs[1].stored_headers = {"authorization": "[redacted]"}
    with caplog.at_level(logging.INFO, logger="deliveries.attempts"):
        attempts_record(jobs)
    records = [r for r in caplog.records if r.name == "deliveries.attempts"]
    assert len(records) == 2
    lines = [json.loads(JsonFormatter().format(r)) for r in records]
    ok, failed = sorted(lines, key=lambda line: line["delivery_id"])
    assert ok["event_id"] == jobs[0].claim.event_id
    assert ok["endpoint_id"] == jobs[0].claim.endpoint_id
    assert (ok["outcome"], ok["status_code"], ok["duration_ms"]) == ("succeeded", 200, 3.0)
    assert (failed["outcome"], failed["status_code"]) == ("retrying", 503)
    assert failed["next_attempt_in_s"] == pytest.approx(5, rel=0.2)
    assert failed["level"] == "INFO"
    assert "secret-looking" not in json.dumps(lines)
    assert "authorization" not in json.dumps(lines)
    assert "503" in failed["message"]
