"""Transformation through the API and a real worker: the type's mapping, an endpoint's own
mapping, the output schema, and the preview that shows exactly what would be sent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from deliveries.models import DeadLetter, Delivery, DeliveryAttempt
from tests.conftest import WorkerProcess, wait_until
from tests.sink import Sink

ORDER_SCHEMA = {
    "type": "object",
    "required": ["order", "customer"],
    "properties": {"order": {"type": "object"}, "customer": {"type": "object"}},
}
MAPPING = {
    "order_id": "order.id",
    "total": {"amount": "order.total_cents", "currency": "order.currency"},
    "customer_email": "customer.email",
}
OUTPUT_SCHEMA = {
    "type": "object",
    "required": ["order_id", "total"],
    "properties": {"order_id": {"type": "string"}, "total": {"type": "object"}},
}
ORDER = {
    "order": {"id": "o-1", "total_cents": 1250, "currency": "EUR", "internal_margin": 310},
    "customer": {"email": "ada@example.com", "segment": "vip"},
}


def _order_type(api: APIClient, **extra: Any) -> Any:
    return api.post(
        "/api/v1/event-types/",
        {"name": "order.created", "schema": ORDER_SCHEMA, **extra},
        format="json",
    )


@pytest.mark.django_db
def test_a_bad_mapping_or_output_schema_is_refused_when_saved(api: APIClient) -> None:
    bad = _order_type(api, transform={"total": {"amount": "order.["}})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["pointer"] == "/transform"
    assert bad.json()["errors"][0]["detail"].startswith("/total/amount: invalid expression")
    worse = _order_type(api, output_schema={"type": "nope"})
    assert worse.status_code == 422
    assert worse.json()["errors"][0]["pointer"] == "/output_schema/type"


@pytest.mark.django_db
def test_the_preview_shows_exactly_the_body_and_refuses_what_would_not_be_sent(
    api: APIClient,
) -> None:
    assert _order_type(api, transform=MAPPING, output_schema=OUTPUT_SCHEMA).status_code == 201
    preview = api.post("/api/v1/event-types/order.created/preview/", {"data": ORDER}, format="json")
    assert preview.status_code == 200, preview.json()
    expected = {
        "order_id": "o-1",
        "total": {"amount": 1250, "currency": "EUR"},
        "customer_email": "ada@example.com",
    }
    assert preview.json()["payload"] == expected
    body = json.loads(preview.json()["body"])
    assert (body["type"], body["data"]) == ("order.created", expected)
    # an input that breaks the schema, and one whose payload breaks the output schema
    invalid = api.post(
        "/api/v1/event-types/order.created/preview/", {"data": {"order": 1}}, format="json"
    )
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["pointer"].startswith("/data")
    no_id = {**ORDER, "order": {"total_cents": 1}}
    refused = api.post("/api/v1/event-types/order.created/preview/", {"data": no_id}, format="json")
    assert refused.status_code == 422
    assert "payload fails the output schema" in refused.json()["errors"][0]["detail"]
    # naming what failed, not only where
    assert "/order_id type: " in refused.json()["errors"][0]["detail"]
    # an endpoint's own mapping is what that endpoint would get
    endpoint = api.post(
        "/api/v1/endpoints/",
        {"url": "http://127.0.0.1:9/p", "transforms": {"order.created": {"id": "order.id"}}},
        format="json",
    ).json()
    mine = api.post(
        "/api/v1/event-types/order.created/preview/",
        {"data": ORDER, "endpoint": endpoint["id"]},
        format="json",
    )
    assert mine.status_code == 422  # {"id": ...} has no order_id: the output schema holds
    api.patch(
        "/api/v1/endpoints/" + endpoint["id"] + "/",
        {"transforms": {"order.created": {"order_id": "order.id", "total": "order"}}},
        format="json",
    )
    mine = api.post(
        "/api/v1/event-types/order.created/preview/",
        {"data": ORDER, "endpoint": endpoint["id"]},
        format="json",
    )
    assert mine.json()["payload"]["total"]["internal_margin"] == 310


@pytest.mark.django_db
def test_an_endpoint_mapping_for_an_unknown_type_or_a_bad_one_is_refused(api: APIClient) -> None:
    _order_type(api)
    for transforms, message in [
        ({"nope.created": {"a": "b"}}, "Unknown event type 'nope.created'"),
        ({"order.created": {"a": "b[["}}, "/order.created/a: invalid expression"),
    ]:
        response = api.post(
            "/api/v1/endpoints/",
            {"url": "http://127.0.0.1:9/x", "transforms": transforms},
            format="json",
        )
        assert response.status_code == 400
        assert message in response.json()["errors"][0]["detail"]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_each_endpoint_gets_its_shape_and_a_payload_failing_the_output_schema_is_not_sent(
    api: APIClient, sink: Sink, celery_worker: WorkerProcess
) -> None:
    _order_type(api, transform=MAPPING, output_schema=OUTPUT_SCHEMA)
    standard = api.post("/api/v1/endpoints/", {"url": sink.url("std")}, format="json").json()
    partner = api.post(
        "/api/v1/endpoints/",
        {
            "url": sink.url("partner"),
            "transforms": {
                "order.created": {"order_id": "order.id", "total": {"cents": "order.total_cents"}}
            },
        },
        format="json",
    ).json()
    broken = api.post(
        "/api/v1/endpoints/",
        {"url": sink.url("broken"), "transforms": {"order.created": {"only": "order.id"}}},
        format="json",
    ).json()
    api.post("/api/v1/events/", {"type": "order.created", "data": ORDER}, format="json")

    (std,) = sink.wait_for(1, "std")
    (partner_request,) = sink.wait_for(1, "partner")
    assert json.loads(std.body)["data"] == {
        "order_id": "o-1",
        "total": {"amount": 1250, "currency": "EUR"},
        "customer_email": "ada@example.com",
    }
    assert json.loads(partner_request.body)["data"] == {"order_id": "o-1", "total": {"cents": 1250}}
    # the endpoint whose mapping breaks the output schema gets nothing; its delivery fails
    # with the reason, once, into the dead-letter queue
    failed = wait_until(
        lambda: Delivery.objects.filter(endpoint_id=broken["id"], status="failed").first()
    )
    attempt = DeliveryAttempt.objects.get(delivery=failed)
    assert attempt.error_class == "payload_invalid"
    assert "payload fails the output schema" in attempt.error
    assert DeadLetter.objects.filter(delivery=failed).exists()
    assert sink.requests("broken") == []
    assert {standard["id"], partner["id"]} == set(
        Delivery.objects.filter(status="succeeded").values_list("endpoint_id", flat=True)
    )


@pytest.mark.django_db
def test_the_served_payload_schema_follows_the_output_schema(api: APIClient) -> None:
    _order_type(api, transform=MAPPING, output_schema=OUTPUT_SCHEMA)
    served = api.get("/api/v1/event-types/order.created/schema/").json()
    assert served["properties"]["data"] == OUTPUT_SCHEMA
    api.patch("/api/v1/event-types/order.created/", {"output_schema": None}, format="json")
    served = api.get("/api/v1/event-types/order.created/schema/").json()
    assert served["properties"]["data"] == {}  # transformed, with no declared shape
