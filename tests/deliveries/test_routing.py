"""Routing (issue 16): content filters, wildcard subscriptions, filter-test, the filtered
count, and what an enabled endpoint is sent of what it missed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from deliveries.models import Delivery, DeliveryTotal, Event
from tests.conftest import WorkerProcess, wait_until
from tests.sink import Sink

pytestmark = pytest.mark.django_db


@pytest.fixture
def types(api: APIClient) -> None:
    for name in ("order.created", "order.paid", "order.item.added", "user.created"):
        response = api.post("/api/v1/event-types/", {"name": name, "schema": {}}, format="json")
        assert response.status_code == 201, response.content


def _endpoint(api: APIClient, name: str, **fields: Any) -> dict[str, Any]:
    response = api.post(
        "/api/v1/endpoints/", {"url": f"http://127.0.0.1:9/{name}", **fields}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def _post(api: APIClient, event_type: str, data: Any) -> dict[str, Any]:
    response = api.post("/api/v1/events/", {"type": event_type, "data": data}, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def _targets(event: dict[str, Any]) -> set[str]:
    return set(Delivery.objects.filter(event_id=event["id"]).values_list("endpoint_id", flat=True))


def test_a_filter_decides_which_events_an_endpoint_gets(
    api: APIClient, types: None, django_capture_on_commit_callbacks: Any
) -> None:
    big = _endpoint(api, "big", filter={"total": {"$gte": 100}, "currency": {"$in": ["EUR"]}})
    vip = _endpoint(api, "vip", event_types=["order.*"], filters={"order.paid": {"tags": "vip"}})
    every = _endpoint(api, "all")
    # the filtered counts are written once the events commit
    with django_capture_on_commit_callbacks(execute=True):
        small = _post(api, "order.created", {"total": 5, "currency": "EUR"})
        large = _post(api, "order.created", {"total": 500, "currency": "EUR", "tags": []})
        paid = _post(api, "order.paid", {"total": 500, "currency": "USD", "tags": ["vip"]})
        plain_paid = _post(api, "order.paid", {"total": 1, "tags": ["new"]})
    assert _targets(small) == {vip["id"], every["id"]}
    assert _targets(large) == {big["id"], vip["id"], every["id"]}
    assert _targets(paid) == {vip["id"], every["id"]}
    assert _targets(plain_paid) == {every["id"]}
    assert (small["deliveries"], large["deliveries"]) == (2, 3)
    # the metrics count what the filters kept back, per endpoint
    filtered = {
        (endpoint_id, event_type): count
        for endpoint_id, event_type, count in DeliveryTotal.objects.filter(
            filtered__gt=0
        ).values_list("endpoint_id", "event_type", "filtered")
    }
    assert filtered == {
        (big["id"], "order.created"): 1,
        (big["id"], "order.paid"): 2,
        (vip["id"], "order.paid"): 1,
    }
    metrics = api.get("/api/v1/metrics/", {"window": "1h"}).json()
    assert metrics["deliveries"]["filtered"] == 4


def test_filters_on_sensitive_fields_see_the_data_as_sent(api: APIClient) -> None:
    response = api.post(
        "/api/v1/event-types/",
        {"name": "user.created", "schema": {}, "sensitive_fields": ["/email"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    staff = _endpoint(api, "staff", filter={"email": {"$in": ["a@corp.example"]}})
    event = _post(api, "user.created", {"email": "a@corp.example"})
    assert _targets(event) == {staff["id"]}
    stored = Event.objects.get(pk=event["id"]).data
    assert "a@corp.example" not in json.dumps(stored)  # stored sealed all the same


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        ({"filter": {"total": {"$regex": "^1"}}}, "/filter/total/$regex"),
        ({"filter": {"$or": [{"a": 1}, 7]}}, "/filter/$or/1"),
        ({"filter": ["a"]}, "/filter"),
        ({"filters": {"order.paid": {"total": {"$gt": []}}}}, "/filters/order.paid/total/$gt"),
        ({"filters": {"no.such": {}}}, "/filters/no.such"),
        ({"filters": ["x"]}, "/filters"),
        ({"event_types": ["order*"]}, "/event_types"),
        ({"event_types": ["order.nope"]}, "/event_types"),
    ],
)
def test_bad_routing_is_a_400_with_its_pointer(
    api: APIClient, types: None, fields: dict[str, Any], pointer: str
) -> None:
    response = api.post(
        "/api/v1/endpoints/", {"url": "http://127.0.0.1:9/x", **fields}, format="json"
    )
    assert response.status_code == 400, response.content
    assert [e["pointer"] for e in response.json()["errors"]] == [pointer]
    endpoint = _endpoint(api, "ok")
    patched = api.patch(f"/api/v1/endpoints/{endpoint['id']}/", fields, format="json")
    assert patched.status_code == 400
    assert [e["pointer"] for e in patched.json()["errors"]] == [pointer]


def test_wildcards_subscribe_to_present_and_future_types(api: APIClient, types: None) -> None:
    orders = _endpoint(api, "orders", event_types=["order.*"])
    paid = _endpoint(api, "paid", event_types=["*.paid"])
    assert _targets(_post(api, "order.item.added", {})) == {orders["id"]}
    assert _targets(_post(api, "order.paid", {})) == {orders["id"], paid["id"]}
    assert _targets(_post(api, "user.created", {})) == set()
    # a type registered later is matched from its first event (the configuration changed)
    api.post("/api/v1/event-types/", {"name": "order.refunded", "schema": {}}, format="json")
    assert _targets(_post(api, "order.refunded", {})) == {orders["id"]}


def test_filter_test_answers_without_storing(
    api: APIClient, types: None, make_api_client: Any
) -> None:
    endpoint = _endpoint(
        api,
        "t",
        event_types=["order.*"],
        filter={"currency": "EUR"},
        filters={"order.paid": {"total": {"$gt": 100}}},
    )
    url = f"/api/v1/endpoints/{endpoint['id']}/filter-test/"
    reader = make_api_client(["read"])
    yes = reader.post(
        url, {"type": "order.paid", "data": {"currency": "EUR", "total": 101}}, format="json"
    )
    assert yes.status_code == 200, yes.content
    assert yes.json() == {"matches": True, "subscribed": True, "clause": None, "reason": None}
    no = reader.post(
        url, {"type": "order.paid", "data": {"currency": "EUR", "total": 5}}, format="json"
    )
    assert no.json()["matches"] is False
    assert no.json()["clause"] == "/filters/order.paid/total/$gt"
    wrong = reader.post(url, {"type": "order.paid", "data": {"currency": "USD"}}, format="json")
    assert wrong.json()["clause"] == "/filter/currency"
    other = reader.post(url, {"type": "user.created", "data": {}}, format="json")
    assert other.json() == {
        "matches": False,
        "subscribed": False,
        "clause": None,
        "reason": "the endpoint does not subscribe to 'user.created'",
    }
    unknown = reader.post(url, {"type": "x.y", "data": {}}, format="json")
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["pointer"] == "/type"
    extra = reader.post(url, {"type": "order.paid", "data": {}, "more": 1}, format="json")
    assert extra.status_code == 400
    assert Event.objects.count() == 0


def test_enabling_sends_what_was_missed_through_the_filters(api: APIClient, types: None) -> None:
    endpoint = _endpoint(api, "e", event_types=["order.*"], filter={"total": {"$gt": 10}})
    api.patch(f"/api/v1/endpoints/{endpoint['id']}/", {"enabled": False}, format="json")
    kept = _post(api, "order.paid", {"total": 50})
    _post(api, "order.paid", {"total": 5})
    _post(api, "user.created", {"total": 50})
    response = api.post(
        f"/api/v1/endpoints/{endpoint['id']}/enable/", {"replay_missed": True}, format="json"
    )
    assert response.status_code == 200, response.content
    assert set(Delivery.objects.values_list("event_id", flat=True)) == {kept["id"]}


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_delivers_only_what_matches(
    api: APIClient, celery_worker: WorkerProcess, sink: Sink
) -> None:
    api.post("/api/v1/event-types/", {"name": "order.created", "schema": {}}, format="json")
    api.post(
        "/api/v1/endpoints/",
        {"url": sink.url("eu"), "filter": {"country": {"$in": ["DE", "FR"]}}},
        format="json",
    )
    for n, country in enumerate(["DE", "US", "FR", "JP"]):
        _post(api, "order.created", {"n": n, "country": country})
    received = sink.wait_for(2, "eu")
    assert sorted(json.loads(r.body)["data"]["country"] for r in received) == ["DE", "FR"]
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 2, timeout=20)
    assert Delivery.objects.count() == 2


def _delivery(api: APIClient, status: str, **fields: Any) -> Delivery:
    endpoint = _endpoint(api, f"op-{status}")
    event = _post(api, "order.created", {"n": 1})
    delivery = Delivery.objects.get(event_id=event["id"], endpoint_id=endpoint["id"])
    Delivery.objects.filter(pk=delivery.pk).update(status=status, attempt_count=3, **fields)
    delivery.refresh_from_db()
    return delivery


@pytest.mark.parametrize("status", ["succeeded", "failed", "dead"])
def test_resend_sends_a_finished_delivery_again(api: APIClient, types: None, status: str) -> None:
    from audit.models import AuditRecord

    delivery = _delivery(api, status)
    response = api.post(f"/api/v1/deliveries/{delivery.pk}/resend/")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.retry_base, delivery.completed_at) == ("pending", 3, None)
    assert AuditRecord.objects.filter(action="delivery.resent", object_id=str(delivery.pk)).exists()
    again = api.post(f"/api/v1/deliveries/{delivery.pk}/resend/")
    assert again.status_code == 409
    assert "pending" in again.json()["detail"]


def test_retry_now_moves_a_waiting_delivery_up(api: APIClient, types: None) -> None:
    from datetime import timedelta

    from django.utils import timezone

    later = timezone.now() + timedelta(hours=1)
    delivery = _delivery(api, "pending", next_attempt_at=later)
    response = api.post(f"/api/v1/deliveries/{delivery.pk}/retry-now/")
    assert response.status_code == 202, response.content
    delivery.refresh_from_db()
    assert delivery.next_attempt_at <= timezone.now()
    assert delivery.attempt_count == 3
    finished = _delivery(api, "succeeded")
    refused = api.post(f"/api/v1/deliveries/{finished.pk}/retry-now/")
    assert refused.status_code == 409
    assert "resend" in refused.json()["detail"]


def test_resend_needs_the_replay_scope_and_no_body(
    api: APIClient, types: None, make_api_client: Any
) -> None:
    delivery = _delivery(api, "dead")
    reader = make_api_client(["read"])
    assert reader.post(f"/api/v1/deliveries/{delivery.pk}/resend/").status_code == 403
    assert (
        api.post(f"/api/v1/deliveries/{delivery.pk}/resend/", {"x": 1}, format="json").status_code
        == 400
    )


@pytest.mark.django_db(transaction=True)
def test_a_resent_delivery_reaches_the_consumer_again_with_the_same_id(
    api: APIClient, celery_worker: WorkerProcess, sink: Sink
) -> None:
    api.post("/api/v1/event-types/", {"name": "order.created", "schema": {}}, format="json")
    api.post("/api/v1/endpoints/", {"url": sink.url("again")}, format="json")
    event = _post(api, "order.created", {"n": 1})
    sink.wait_for(1, "again")
    delivery = wait_until(
        lambda: Delivery.objects.filter(event_id=event["id"], status="succeeded").first(),
        timeout=20,
    )
    assert api.post(f"/api/v1/deliveries/{delivery.pk}/resend/").status_code == 202
    first, second = sink.wait_for(2, "again")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event["id"]
    wait_until(lambda: Delivery.objects.get(pk=delivery.pk).status == "succeeded", timeout=20)
    assert Delivery.objects.get(pk=delivery.pk).attempt_count == 2


def test_lists_filter_by_time_type_status_endpoint_and_application(
    api: APIClient, types: None
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    acme = api.post("/api/v1/applications/", {"uid": "acme", "name": "Acme"}, format="json")
    assert acme.status_code == 201, acme.content
    mine = _endpoint(api, "acme", application="acme")
    other = _endpoint(api, "other")
    first = api.post(
        "/api/v1/events/",
        {"type": "order.paid", "data": {}, "application": "acme"},
        format="json",
    ).json()
    second = _post(api, "user.created", {})
    start = timezone.now() - timedelta(minutes=1)

    def ids(path: str, **params: Any) -> set[str]:
        response = api.get(path, params)
        assert response.status_code == 200, response.content
        return {str(r["id"]) for r in response.json()["results"]}

    assert ids("/api/v1/events/", application="acme") == {first["id"]}
    assert ids("/api/v1/events/", event_type="user.created") == {second["id"]}
    assert ids("/api/v1/events/", created_after=start.isoformat()) == {first["id"], second["id"]}
    assert ids("/api/v1/events/", created_before=start.isoformat()) == set()
    to_mine = Delivery.objects.get(endpoint_id=mine["id"])
    to_other = Delivery.objects.get(endpoint_id=other["id"])
    assert ids("/api/v1/deliveries/", application="acme") == {str(to_mine.pk)}
    assert ids("/api/v1/deliveries/", event_type="user.created") == {str(to_other.pk)}
    assert ids("/api/v1/deliveries/", endpoint=other["id"], status="pending") == {str(to_other.pk)}
    both = api.get(
        "/api/v1/deliveries/", {"since": start.isoformat(), "created_after": start.isoformat()}
    )
    assert both.status_code == 400
    assert both.json()["errors"][0]["pointer"] == "/since"


def test_an_event_type_carries_a_retry_schedule(api: APIClient) -> None:
    created = api.post(
        "/api/v1/event-types/",
        {"name": "order.paid", "schema": {}, "retry_schedule": [10, 60]},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["retry_schedule"] == [10, 60]
    bad = api.patch("/api/v1/event-types/order.paid/", {"retry_schedule": [-1]}, format="json")
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["pointer"] == "/retry_schedule/0"
    cleared = api.patch("/api/v1/event-types/order.paid/", {"retry_schedule": None}, format="json")
    assert cleared.status_code == 200, cleared.content
    assert cleared.json()["retry_schedule"] is None


def test_channels_narrow_who_gets_an_event(api: APIClient, types: None) -> None:
    eu = _endpoint(api, "eu", channels=["region:eu"])
    eu_us = _endpoint(api, "eu-us", channels=["region:eu", "region:us"])
    every = _endpoint(api, "every")

    def post(channels: Any) -> dict[str, Any]:
        body = {"type": "order.paid", "data": {}, "channels": channels}
        response = api.post("/api/v1/events/", body, format="json")
        assert response.status_code == 202, response.content
        return response.json()

    assert _targets(post(["region:eu"])) == {eu["id"], eu_us["id"], every["id"]}
    assert _targets(post(["region:us", "other"])) == {eu_us["id"], every["id"]}
    assert _targets(post(None)) == {every["id"]}  # listening endpoints need a channel
    assert _targets(_post(api, "order.paid", {})) == {every["id"]}
    assert post(["region:eu"])["channels"] == ["region:eu"]
    bad = api.post(
        "/api/v1/events/",
        {"type": "order.paid", "data": {}, "channels": ["ok", "not ok!"]},
        format="json",
    )
    assert bad.status_code == 422
    assert [e["pointer"] for e in bad.json()["errors"]] == ["/channels/1"]
    refused = api.post(
        "/api/v1/endpoints/", {"url": "http://127.0.0.1:9/c", "channels": ["a b"]}, format="json"
    )
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["pointer"] == "/channels"


def test_an_event_aimed_at_endpoints_goes_to_those_only(
    api: APIClient, types: None, make_api_client: Any
) -> None:
    first = _endpoint(api, "first")
    second = _endpoint(api, "second")
    users_only = _endpoint(api, "users", event_types=["user.created"])
    _endpoint(api, "third")
    body = {"type": "order.paid", "data": {}, "endpoints": [first["id"], second["id"]]}
    event = api.post("/api/v1/events/", body, format="json").json()
    assert _targets(event) == {first["id"], second["id"]}
    assert event["endpoints"] == [first["id"], second["id"]]
    # still subject to its subscription
    aimed = {"type": "order.paid", "data": {}, "endpoints": [users_only["id"]]}
    assert _targets(api.post("/api/v1/events/", aimed, format="json").json()) == set()
    # another application's endpoint, or none, is unknown
    api.post("/api/v1/applications/", {"uid": "acme", "name": "Acme"}, format="json")
    theirs = _endpoint(api, "theirs", application="acme")
    for target in (theirs["id"], "ep_nope"):
        body = {"type": "order.paid", "data": {}, "endpoints": [first["id"], target]}
        response = api.post("/api/v1/events/", body, format="json")
        assert response.status_code == 422, response.content
        assert [e["pointer"] for e in response.json()["errors"]] == ["/endpoints/1"]
    # a key limited to acme aims at acme's endpoints only
    from webhooks.models import ApiKey, Application

    limited = make_api_client(["events:write", "read"])
    key = ApiKey.objects.order_by("-created").first()
    assert key is not None
    key.application = Application.objects.get(uid="acme")
    key.save()
    mine = {"type": "order.paid", "data": {}, "endpoints": [theirs["id"]]}
    assert _targets(limited.post("/api/v1/events/", mine, format="json").json()) == {theirs["id"]}
    other = {"type": "order.paid", "data": {}, "endpoints": [first["id"]]}
    assert limited.post("/api/v1/events/", other, format="json").status_code == 422


def test_enabling_sends_only_what_was_aimed_at_it_and_on_its_channels(
    api: APIClient, types: None
) -> None:
    endpoint = _endpoint(api, "e", channels=["blue"])
    other = _endpoint(api, "o")
    api.patch(f"/api/v1/endpoints/{endpoint['id']}/", {"enabled": False}, format="json")
    wanted = api.post(
        "/api/v1/events/", {"type": "order.paid", "data": {}, "channels": ["blue"]}, format="json"
    ).json()
    api.post(
        "/api/v1/events/", {"type": "order.paid", "data": {}, "channels": ["red"]}, format="json"
    )
    api.post(
        "/api/v1/events/",
        {"type": "order.paid", "data": {}, "channels": ["blue"], "endpoints": [other["id"]]},
        format="json",
    )
    api.post(f"/api/v1/endpoints/{endpoint['id']}/enable/", {"replay_missed": True}, format="json")
    mine = Delivery.objects.filter(endpoint_id=endpoint["id"]).values_list("event_id", flat=True)
    assert set(mine) == {wanted["id"]}
