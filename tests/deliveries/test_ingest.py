"""Ingestion through the API: errors with pointers, fan-out rows, idempotency, batches."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from deliveries.models import Delivery, Event

ORDER_SCHEMA = {
    "type": "object",
    "required": ["id", "amount"],
    "properties": {"id": {"type": "string"}, "amount": {"type": "integer", "minimum": 0}},
}


@pytest.fixture
def order_type(api: APIClient) -> dict[str, Any]:
    response = api.post(
        "/api/v1/event-types/", {"name": "order.created", "schema": ORDER_SCHEMA}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def _endpoint(api: APIClient, name: str, **fields: Any) -> dict[str, Any]:
    response = api.post(
        "/api/v1/endpoints/", {"url": f"http://127.0.0.1:9/{name}", **fields}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_event_fans_out_one_delivery_per_matching_endpoint(
    api: APIClient, order_type: dict[str, Any]
) -> None:
    # given two subscribed endpoints and one subscribed to another type
    api.post("/api/v1/event-types/", {"name": "user.created", "schema": {}}, format="json")
    a = _endpoint(api, "a")
    b = _endpoint(api, "b", event_types=["order.created"])
    _endpoint(api, "c", event_types=["user.created"])
    # when an order.created event is posted
    response = api.post(
        "/api/v1/events/",
        {"type": "order.created", "data": {"id": "o1", "amount": 3}},
        format="json",
    )
    # then it is accepted with two deliveries, pending, for a and b only
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["id"].startswith("evt_")
    assert body["type"] == "order.created"
    assert body["deliveries"] == 2
    rows = Delivery.objects.filter(event_id=body["id"])
    assert {d.endpoint_id for d in rows} == {a["id"], b["id"]}
    assert {d.status for d in rows} == {"pending"}


def test_unknown_type_is_422_naming_the_type(api: APIClient) -> None:
    response = api.post("/api/v1/events/", {"type": "nope", "data": {}}, format="json")
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["errors"][0]["pointer"] == "/type"
    assert Event.objects.count() == 0


def test_schema_violations_are_422_with_pointers_into_data(
    api: APIClient, order_type: dict[str, Any]
) -> None:
    response = api.post(
        "/api/v1/events/",
        {"type": "order.created", "data": {"id": 5, "amount": -1}},
        format="json",
    )
    assert response.status_code == 422
    errors = {(e["pointer"], e["keyword"]) for e in response.json()["errors"]}
    assert errors == {("/data/id", "type"), ("/data/amount", "minimum")}
    assert Event.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "pointer"),
    [({"data": {}}, "/type"), ({"type": "order.created"}, "/data")],
)
def test_missing_fields_are_422_with_pointers(
    api: APIClient, order_type: dict[str, Any], body: dict[str, Any], pointer: str
) -> None:
    response = api.post("/api/v1/events/", body, format="json")
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == pointer


def test_malformed_json_is_400(api: APIClient) -> None:
    response = api.post("/api/v1/events/", b'{"type": ', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"


def test_wrong_content_type_is_415(api: APIClient) -> None:
    response = api.post(
        "/api/v1/events/", b"type=x", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415


def test_body_over_the_limit_is_413(api: APIClient, settings: Any) -> None:
    settings.WEBHOOKS_MAX_PAYLOAD_BYTES = 2048
    big = b'{"type": "order.created", "data": {"pad": "' + b"x" * 4096 + b'"}}'
    response = api.post("/api/v1/events/", big, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_no_key_is_401_and_bad_key_is_401(db: None) -> None:
    client = APIClient()
    assert client.post("/api/v1/events/", {}, format="json").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Bearer abcdefgh.wrong")
    response = client.post("/api/v1/events/", {}, format="json")
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_read_only_key_cannot_post_events(make_api_client: Any, order_type: dict) -> None:
    reader = make_api_client(["read"])
    response = reader.post(
        "/api/v1/events/",
        {"type": "order.created", "data": {"id": "1", "amount": 1}},
        format="json",
    )
    assert response.status_code == 403
    assert reader.get("/api/v1/events/").status_code == 200


def test_read_only_key_cannot_read_secrets(make_api_client: Any, api: APIClient) -> None:
    endpoint = _endpoint(api, "s")
    reader = make_api_client(["read"])
    assert reader.get(f"/api/v1/endpoints/{endpoint['id']}/secret/").status_code == 403
    secret = api.get(f"/api/v1/endpoints/{endpoint['id']}/secret/").json()["secret"]
    assert secret == endpoint["secret"]


def test_idempotency_key_returns_the_first_event_without_new_deliveries(
    api: APIClient, order_type: dict[str, Any]
) -> None:
    _endpoint(api, "a")
    payload = {"type": "order.created", "data": {"id": "o1", "amount": 1}, "idempotency_key": "k1"}
    first = api.post("/api/v1/events/", payload, format="json").json()
    second = api.post("/api/v1/events/", payload, format="json").json()
    assert second["id"] == first["id"]
    assert second["created"] is False
    assert second["deliveries"] == 1
    assert Event.objects.count() == 1
    assert Delivery.objects.count() == 1


def test_an_idempotency_key_reused_with_another_body_is_a_409_naming_the_event(
    api: APIClient, order_type: dict[str, Any]
) -> None:
    _endpoint(api, "a")
    payload = {"type": "order.created", "data": {"id": "o1", "amount": 1}, "idempotency_key": "k1"}
    first = api.post("/api/v1/events/", payload, format="json").json()
    changed = {**payload, "data": {"id": "o1", "amount": 2}}
    conflict = api.post("/api/v1/events/", changed, format="json")
    assert conflict.status_code == 409
    body = conflict.json()
    assert body["error"] == "conflict"
    (error,) = body["errors"]
    assert error["pointer"] == "/idempotency_key"
    assert error["event"] == first["id"]
    assert "different body" in error["detail"]
    # key order does not make a body different; the same body still returns the original
    reordered = {
        "idempotency_key": "k1",
        "data": {"amount": 1, "id": "o1"},
        "type": "order.created",
    }
    assert api.post("/api/v1/events/", reordered, format="json").json()["id"] == first["id"]
    # in a batch, the item is named, and nothing of the batch is stored
    batch = api.post(
        "/api/v1/events/batch/",
        [{"type": "order.created", "data": {"id": "o2", "amount": 1}}, changed],
        format="json",
    )
    assert batch.status_code == 409
    assert batch.json()["errors"][0]["pointer"] == "/1/idempotency_key"
    # and two items of one batch sharing a key must agree too
    twins = api.post(
        "/api/v1/events/batch/",
        [{**payload, "idempotency_key": "k2"}, {**changed, "idempotency_key": "k2"}],
        format="json",
    )
    assert twins.status_code == 409
    assert Event.objects.count() == 1
    assert Delivery.objects.count() == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/events/", {"type": "order.created", "data": {}, "order_key": "x"}),
        ("/api/v1/events/", {"type": "order.created", "data": {}, "channel": ["a"]}),
        ("/api/v1/event-types/", {"name": "x.y", "schema": {}, "filter": {}}),
        ("/api/v1/applications/", {"uid": "a1", "name": "A", "metadata": {}}),
        ("/api/v1/endpoints/", {"url": "http://127.0.0.1:9/x", "metadata": {"a": 1}}),
        ("/api/v1/endpoints/", {"url": "http://127.0.0.1:9/x", "channel": ["c"]}),
        ("/api/v1/dead-letters/replay/", {"endpoint_id": "ep_x"}),
    ],
)
def test_unknown_fields_are_refused_naming_each_one(
    api: APIClient, order_type: dict[str, Any], path: str, body: dict[str, Any]
) -> None:
    answer = api.post(path, body, format="json")
    assert answer.status_code == 400, answer.content
    unknown = set(body) - {"type", "data", "name", "schema", "uid", "url"}
    assert {e["pointer"] for e in answer.json()["errors"]} == {f"/{k}" for k in unknown}
    assert not Event.objects.exists()


def test_unknown_fields_on_updates_batches_and_bodiless_actions_are_refused(
    api: APIClient, order_type: dict[str, Any]
) -> None:
    endpoint = _endpoint(api, "a")
    path = f"/api/v1/endpoints/{endpoint['id']}/"
    for method in (api.patch, api.put):
        answer = method(path, {"url": endpoint["url"], "metadata": {}}, format="json")
        assert answer.status_code == 400
        assert answer.json()["errors"][0]["pointer"] == "/metadata"
    # a body read from the API and sent back (read-only fields included) is accepted
    read = api.get(path).json()
    assert api.put(path, {**read, "headers": {}}, format="json").status_code == 200
    batch = api.post(
        "/api/v1/events/batch/",
        [{"type": "order.created", "data": {}}, {"type": "order.created", "data": {}, "x": 1}],
        format="json",
    )
    assert batch.status_code == 400
    assert batch.json()["errors"][0]["pointer"] == "/1/x"
    for action in ("test", "rotate-secret", "enable"):
        answer = api.post(f"{path}{action}/", {"nope": 1}, format="json")
        assert answer.status_code == 400, (action, answer.content)
        assert answer.json()["errors"][0]["pointer"] == "/nope"
    assert not Event.objects.filter(event_type_id="order.created").exists()


def test_application_events_reach_only_that_applications_endpoints(
    api: APIClient, order_type: dict[str, Any]
) -> None:
    api.post("/api/v1/applications/", {"uid": "acme", "name": "Acme"}, format="json")
    api.post("/api/v1/applications/", {"uid": "globex", "name": "Globex"}, format="json")
    acme = _endpoint(api, "acme", application="acme")
    _endpoint(api, "globex", application="globex")
    _endpoint(api, "none")
    response = api.post(
        "/api/v1/events/",
        {"type": "order.created", "data": {"id": "o", "amount": 1}, "application": "acme"},
        format="json",
    )
    assert response.status_code == 202
    assert [d.endpoint_id for d in Delivery.objects.all()] == [acme["id"]]
    unknown = api.post(
        "/api/v1/events/",
        {"type": "order.created", "data": {"id": "o", "amount": 1}, "application": "nobody"},
        format="json",
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["pointer"] == "/application"


def test_batch_is_all_or_nothing_with_indexed_pointers(
    api: APIClient, order_type: dict[str, Any]
) -> None:
    _endpoint(api, "a")
    good = {"type": "order.created", "data": {"id": "o", "amount": 1}}
    bad = {"type": "order.created", "data": {"id": "o", "amount": "x"}}
    response = api.post("/api/v1/events/batch/", [good, bad, good], format="json")
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "/1/data/amount"
    assert Event.objects.count() == 0

    response = api.post("/api/v1/events/batch/", [good] * 3, format="json")
    assert response.status_code == 202
    body = response.json()
    assert body["count"] == 3
    assert [r["deliveries"] for r in body["results"]] == [1, 1, 1]
    assert Delivery.objects.count() == 3


@pytest.mark.parametrize(
    ("item", "pointer", "accepted_as"),
    [
        # items that are not only a plain type and data go through the serializer, item by item
        ({"type": " order.created ", "data": {"id": "o", "amount": 1}}, None, "order.created"),
        ({"type": "order.created", "data": None}, "/1/data", None),
        ({"type": "", "data": {}}, "/1/type", None),
        ({"type": "x" * 201, "data": {}}, "/1/type", None),
        ({"type": 7, "data": {}}, "/1/type", None),
        ({"type": "order.created"}, "/1/data", None),
    ],
)
def test_a_batch_answers_as_its_items_would_alone(
    api: APIClient,
    order_type: dict[str, Any],
    item: dict[str, Any],
    pointer: str | None,
    accepted_as: str | None,
) -> None:
    _endpoint(api, "a")
    good = {"type": "order.created", "data": {"id": "o", "amount": 1}}
    response = api.post("/api/v1/events/batch/", [good, item], format="json")
    if pointer is None:
        assert response.status_code == 202
        assert [r["type"] for r in response.json()["results"]] == ["order.created", accepted_as]
    else:
        assert response.status_code == 422
        assert [e["pointer"] for e in response.json()["errors"]] == [pointer], response.json()
        assert Event.objects.count() == 0


def test_batch_requires_a_list(api: APIClient) -> None:
    response = api.post("/api/v1/events/batch/", {"type": "x"}, format="json")
    assert response.status_code == 400


def test_event_detail_lists_its_deliveries(api: APIClient, order_type: dict[str, Any]) -> None:
    endpoint = _endpoint(api, "a")
    event = api.post(
        "/api/v1/events/",
        {"type": "order.created", "data": {"id": "o", "amount": 1}},
        format="json",
    ).json()
    detail = api.get(f"/api/v1/events/{event['id']}/").json()
    assert detail["data"] == {"id": "o", "amount": 1}
    assert [d["endpoint"] for d in detail["deliveries"]] == [endpoint["id"]]
    listed = api.get("/api/v1/deliveries/", {"event": event["id"], "status": "pending"}).json()
    assert [d["event"] for d in listed["results"]] == [event["id"]]
    assert listed["next"] is None
    assert api.get("/api/v1/deliveries/", {"status": "bogus"}).status_code == 400
