"""A canary planted in sensitive fields appears nowhere it must not: not in the database dump,
the logs, the API's answers, or the bytes consumers receive, except inside the JWE that the
consumer who owns the key decrypts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings as django_settings
from jwcrypto import jwe, jwk
from rest_framework.test import APIClient

from deliveries.models import Delivery
from schemas_app.masking import REDACTED, hash_value
from tests.conftest import WorkerProcess, pg_dump, wait_until
from tests.sink import Sink

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CANARY = "CANARY-7f3a9c"
CARD = f"4111-{CANARY}-9999"
EMAIL = f"{CANARY.lower()}@example.com"


def test_a_canary_in_masked_fields_leaks_nowhere(
    api: APIClient, sink: Sink, celery_worker: WorkerProcess, caplog: Any
) -> None:
    private = jwk.JWK.from_pyca(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    created = api.post(
        "/api/v1/event-types/",
        {
            "name": "payment.captured",
            "schema": {"type": "object", "required": ["id", "card", "customer"]},
            "sensitive_fields": ["/card/number", "/customer/email"],
            "transform": {
                "payment_id": "id",
                "card_number": "card.number",
                "email": "customer.email",
                "amount": "amount",
            },
            "masking": [
                {"path": "/card_number", "action": "mask", "keep": 4},
                {"path": "/email", "action": "redact"},
            ],
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    standard = api.post("/api/v1/endpoints/", {"url": sink.url("std")}, format="json").json()
    partner = api.post(
        "/api/v1/endpoints/",
        {
            "url": sink.url("partner"),
            "encryption_key": json.loads(private.export_public()),
            "masking": {
                "payment.captured": [
                    {"path": "/card_number", "action": "encrypt"},
                    {"path": "/email", "action": "hash"},
                ]
            },
        },
        format="json",
    ).json()
    accepted = api.post(
        "/api/v1/events/",
        {
            "type": "payment.captured",
            "data": {
                "id": "p-1",
                "amount": 990,
                "card": {"number": CARD},
                "customer": {"email": EMAIL},
            },
        },
        format="json",
    )
    assert accepted.status_code == 202
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 2)

    # what each consumer received: masked for one, encrypted for the other's key only
    (std,) = sink.requests("std")
    (mine,) = sink.requests("partner")
    assert CANARY.encode() not in std.body
    assert CANARY.encode() not in mine.body
    std_data = json.loads(std.body)["data"]
    assert std_data == {
        "payment_id": "p-1",
        "card_number": "*" * (len(CARD) - 4) + "9999",
        "email": REDACTED,
        "amount": 990,
    }
    partner_data = json.loads(mine.body)["data"]
    token = jwe.JWE()
    token.deserialize(partner_data["card_number"], key=private)
    assert json.loads(token.payload) == CARD
    assert partner_data["email"] == hash_value(EMAIL, django_settings.WEBHOOKS_HASH_KEY)

    # the API's answers: the 202, the event, its deliveries and their attempts
    answers = [accepted.content]
    event_id = accepted.json()["id"]
    answers.append(api.get(f"/api/v1/events/{event_id}/").content)
    answers.append(api.get("/api/v1/events/").content)
    answers.append(api.get("/api/v1/deliveries/").content)
    for delivery in Delivery.objects.all():
        answers.append(api.get(f"/api/v1/deliveries/{delivery.pk}/attempts/").content)
    for endpoint in (standard, partner):
        answers.append(api.get(f"/api/v1/endpoints/{endpoint['id']}/").content)
    for answer in answers:
        assert CANARY.encode() not in answer
        assert CANARY.lower().encode() not in answer

    # the database dump, and the logs of this process and of the worker
    dump = pg_dump()
    assert CANARY not in dump
    assert CANARY.lower() not in dump
    logs = caplog.text + "".join(celery_worker.output)
    assert CANARY not in logs
    assert CANARY.lower() not in logs


def test_a_sealed_field_no_masking_covers_is_sealed_in_the_attempt_log_too(
    api: APIClient, sink: Sink, celery_worker: WorkerProcess
) -> None:
    # given a sealed field sent to the consumer as it is (no masking rule), and one that a
    # mapping joins into another string
    created = api.post(
        "/api/v1/event-types/",
        {
            "name": "customer.updated",
            "schema": {"type": "object"},
            "sensitive_fields": ["/email", "/ssn"],
            "transform": {
                "email": "email",
                "ssn": "ssn",
                "label": "join(' ', [name, email])",
                "name": "name",
            },
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    endpoint = api.post("/api/v1/endpoints/", {"url": sink.url("plain")}, format="json").json()
    data = {"email": EMAIL, "ssn": 123456789, "name": "Ada"}
    assert (
        api.post(
            "/api/v1/events/", {"type": "customer.updated", "data": data}, format="json"
        ).status_code
        == 202
    )
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 1)
    # then the consumer gets it in clear (nothing masks it) ...
    (request,) = sink.requests("plain")
    sent = json.loads(request.body)["data"]
    assert sent["email"] == EMAIL
    assert sent["ssn"] == 123456789
    # ... but the attempt log, in the API and in the database, never has it
    delivery = Delivery.objects.get(endpoint_id=endpoint["id"])
    attempts = api.get(f"/api/v1/deliveries/{delivery.pk}/attempts/")
    assert CANARY.lower() not in attempts.content.decode()
    stored = json.loads(attempts.json()["results"][0]["request_body"])["data"]
    assert stored == {
        "email": "[sealed]",
        "ssn": "[sealed]",
        "label": "[sealed]",
        "name": "Ada",
    }
    assert CANARY.lower() not in pg_dump()
    assert "123456789" not in pg_dump()
