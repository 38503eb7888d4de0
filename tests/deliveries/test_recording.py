"""Recording finished attempts against the real database, when the world changed meanwhile."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.utils import timezone

from deliveries.job import Job
from deliveries.models import Delivery, DeliveryAttempt, DeliveryTotal, Event
from deliveries.services.claims import deliveries_claim, deliveries_release, leases_renew
from deliveries.services.dispatch import deliveries_dispatch
from deliveries.services.recording import attempts_record
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

    # then each try still has exactly one attempt row, and is counted once in the metrics
    assert DeliveryAttempt.objects.count() == 2
    assert sum(DeliveryTotal.objects.values_list("attempts", flat=True)) == 2
    assert sum(DeliveryTotal.objects.values_list("succeeded", flat=True)) == 2


def _claim_lost_in_a_crash(job: Job) -> Job:
    """The delivery's claim was committed without waiting for the WAL flush and a database
    crash forgot it: the row is back to what it was before, and the sweeper claims it again."""
    Delivery.objects.filter(pk=job.claim.delivery_id).update(
        status="pending", attempt_count=0, lease_expires_at=None
    )
    (again,) = deliveries_claim(delivery_ids=[job.claim.delivery_id], now=timezone.now())
    assert again.number == job.claim.number  # the same attempt number, claimed twice
    return Job(
        claim=again,
        started_at=time.time(),
        result=transport.TransportResult(status_code=200, duration_ms=4.0),
    )


@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "one-batch"])
def test_both_sends_of_a_claim_lost_in_a_crash_are_in_the_audit_log(
    together: bool, caplog: Any
) -> None:
    # given a delivery sent (the consumer answered 503), whose claim a database crash forgot,
    # then claimed again and sent again (200) before the first send could be recorded
    (lost,) = _claimed(1)
    lost.result = transport.TransportResult(status_code=503, duration_ms=2.0)
    again = _claim_lost_in_a_crash(lost)

    # when both sends are recorded, the lost claim's first
    if together:
        attempts_record([lost, again])
    else:
        attempts_record([lost])
        attempts_record([again])

    # then both requests are in the audit log, the second under the next number
    rows = list(DeliveryAttempt.objects.order_by("number").values_list("number", "status_code"))
    assert rows == [(1, 503), (2, 200)]
    # and only the claim that holds the row moved it: the lost one's 503 did not schedule a retry
    delivery = Delivery.objects.get(pk=lost.claim.delivery_id)
    assert (delivery.status, delivery.last_status_code) == ("succeeded", 200)
    assert delivery.attempt_count == 2  # it counts both requests
    assert "claimed twice as attempt 1" in caplog.text
    # and recording the batch again (its commit's answer lost) adds nothing
    attempts_record([lost, again])
    assert DeliveryAttempt.objects.count() == 2


def test_giving_back_a_claim_whose_lease_was_taken_back_leaves_the_new_claim_alone() -> None:
    # given a delivery whose lease was taken back by the sweeper and claimed by another worker
    (old,) = _claimed(1)
    Delivery.objects.filter(pk=old.claim.delivery_id).update(
        status="pending", lease_expires_at=None
    )
    (new,) = deliveries_claim(delivery_ids=[old.claim.delivery_id], now=timezone.now())

    # when the first worker gives its claim back (it never sent it)
    deliveries_release(claims=[old.claim], delay=5)

    # then the second worker's claim still holds the row
    delivery = Delivery.objects.get(pk=new.delivery_id)
    assert (delivery.status, delivery.attempt_count) == ("in_flight", 2)
    assert delivery.lease_expires_at == new.lease
    # and giving back the claim that holds it works
    deliveries_release(claims=[new], delay=5)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count) == ("pending", 1)


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


def test_a_body_is_stored_once_per_delivery_and_again_only_when_another_was_sent(
    api: Any,
) -> None:
    # given a delivery tried three times: twice with one body (503), then with another (200)
    (job,) = _claimed(1)
    delivery_id = job.claim.delivery_id
    bodies = [b'{"n": 1}', b'{"n": 1}', b'{"n": 2, "changed": true}']
    for number, (body, code) in enumerate(zip(bodies, (503, 503, 200), strict=True), start=1):
        if number > 1:
            Delivery.objects.filter(pk=delivery_id).update(next_attempt_at=timezone.now())
            (claim,) = deliveries_claim(delivery_ids=[delivery_id], now=timezone.now())
            job = Job(claim=claim)
        job.body = body
        job.started_at = time.time()
        job.result = transport.TransportResult(status_code=code, duration_ms=2.0)
        attempts_record([job])

    # then the delivery holds the first body, the attempt that sent it again stores nothing,
    # the one that sent another stores its own
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.request_body == '{"n": 1}'
    stored = list(
        DeliveryAttempt.objects.filter(delivery_id=delivery_id)
        .order_by("number")
        .values_list("request_body", "request_body_bytes")
    )
    assert stored == [(None, 8), (None, 8), ('{"n": 2, "changed": true}', 25)]
    # and every attempt shows what it sent
    attempts = api.get(f"/api/v1/deliveries/{delivery_id}/attempts/").json()["results"]
    assert [a["request_body"] for a in attempts] == [b.decode() for b in bodies]


def test_held_claims_are_renewed_in_the_database_and_one_taken_back_is_reported(
    settings: Any,
) -> None:
    # given three claims held by a worker, one of them since taken back by the sweeper and
    # claimed again by another worker (its claim time changed)
    settings.WEBHOOKS_LEASE_SECONDS = 65
    jobs = _claimed(3)
    before = {d.pk: d.lease_expires_at for d in Delivery.objects.all()}
    taken = jobs[2].claim.delivery_id
    Delivery.objects.filter(pk=taken).update(last_attempt_at=timezone.now())
    time.sleep(0.01)
    # when the renewal thread renews them
    lost = leases_renew(jobs)
    # then the two still held have a new lease, in the row and on the claim; the third is lost
    assert lost == {taken}
    for job in jobs[:2]:
        row = Delivery.objects.get(pk=job.claim.delivery_id)
        assert row.lease_expires_at > before[row.pk]
        assert job.claim.lease == row.lease_expires_at
    assert Delivery.objects.get(pk=taken).lease_expires_at == before[taken]


@pytest.mark.parametrize(
    ("type_schedule", "endpoint_schedule", "expected"),
    [
        ([600], None, 600),  # the type's, over the default (5 s)
        ([600], [1200], 1200),  # the endpoint's own wins
        (None, None, 5),  # the default
    ],
)
def test_a_retry_waits_by_the_endpoints_then_the_types_then_the_default_schedule(
    settings: Any, type_schedule: Any, endpoint_schedule: Any, expected: int
) -> None:
    settings.WEBHOOKS_RETRY_SCHEDULE = [5]
    settings.WEBHOOKS_RETRY_JITTER = 0.0
    event_type_create(name="order.paid", schema={}, retry_schedule=type_schedule)
    endpoint, _ = endpoint_create(url="http://127.0.0.1:9/x", retry_schedule=endpoint_schedule)
    event = Event.objects.create(event_type_id="order.paid", data={})
    delivery = Delivery.objects.create(event=event, endpoint=endpoint)
    (claim,) = deliveries_claim(delivery_ids=[delivery.pk], now=timezone.now())
    assert (claim.type_schedule, claim.schedule) == (type_schedule, endpoint_schedule)
    failed = Job(
        claim=claim,
        started_at=time.time(),
        result=transport.TransportResult(status_code=500, duration_ms=3.0),
    )
    before = timezone.now()
    attempts_record([failed])
    after = timezone.now()
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    # due `expected` seconds after the moment it was recorded (no jitter), whatever that took
    wait = timedelta(seconds=expected)
    assert before + wait <= delivery.next_attempt_at <= after + wait
