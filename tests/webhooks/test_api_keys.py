"""API keys attacked: revoked, expired, wrong scope, and a key limited to one application
reaching for another's objects (404, as if they did not exist)."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from deliveries.models import DeadLetter, Delivery, Event
from schemas_app.services import event_type_create
from webhooks.models import ApiKey, Endpoint
from webhooks.services import api_key_create, application_create, endpoint_create

pytestmark = pytest.mark.django_db


def _client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def _event(client: APIClient, **fields: Any) -> Any:
    return client.post(
        "/api/v1/events/", {"type": "order.created", "data": {}, **fields}, format="json"
    )


@pytest.fixture
def order_type() -> None:
    event_type_create(name="order.created", schema={"type": "object"})


def test_a_key_revoked_by_the_command_is_refused_at_once(order_type: None) -> None:
    api_key, key = api_key_create(name="src", scopes=["events:write"])
    assert _event(_client(key)).status_code == 202
    out = io.StringIO()
    call_command("revoke_api_key", api_key.prefix, stdout=out)
    assert "revoked" in out.getvalue()
    response = _event(_client(key))
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid or revoked API key."
    with pytest.raises(CommandError, match="no API key with prefix"):
        call_command("revoke_api_key", "nope1234")


def test_an_expired_key_is_refused(order_type: None) -> None:
    api_key, key = api_key_create(
        name="src", scopes=["events:write"], expires_at=timezone.now() + timedelta(hours=1)
    )
    assert _event(_client(key)).status_code == 202
    ApiKey.objects.filter(pk=api_key.pk).update(expiry_date=timezone.now() - timedelta(seconds=1))
    assert _event(_client(key)).status_code == 401
    assert Event.objects.count() == 1


def test_the_command_creates_a_key_that_expires(order_type: None) -> None:
    out = io.StringIO()
    call_command(
        "create_api_key", "src", "--expires-in-days", "2", stdout=out, stderr=io.StringIO()
    )
    key = out.getvalue().strip().splitlines()[-1]
    api_key = ApiKey.objects.get_from_key(key)
    assert timedelta(days=1.9) < api_key.expiry_date - timezone.now() < timedelta(days=2.1)


@pytest.mark.parametrize(
    ("scopes", "method", "path", "body"),
    [
        (["read"], "post", "/api/v1/endpoints/", {"url": "http://127.0.0.1:9/x"}),
        (["events:write"], "post", "/api/v1/event-types/", {"name": "a.b", "schema": {}}),
        (["endpoints:manage"], "post", "/api/v1/events/", {"type": "order.created", "data": {}}),
        (["read"], "post", "/api/v1/dead-letters/replay/", {}),
        (["events:write"], "get", "/api/v1/deliveries/", None),
    ],
)
def test_a_key_without_the_scope_is_403(
    order_type: None, scopes: list[str], method: str, path: str, body: Any
) -> None:
    _, key = api_key_create(name="k", scopes=scopes)
    response = getattr(_client(key), method)(path, body, format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"


@pytest.fixture
def two_apps(order_type: None) -> dict[str, Any]:
    """Applications acme and umbrella, each with an endpoint, an event, a delivery and a dead
    letter; a key limited to acme with every scope."""
    objects: dict[str, Any] = {}
    for uid in ("acme", "umbrella"):
        app = application_create(uid=uid, name=uid)
        endpoint, _ = endpoint_create(url=f"http://127.0.0.1:9/{uid}", application=app)
        event = Event.objects.create(event_type_id="order.created", application=app, data={})
        delivery = Delivery.objects.create(event=event, endpoint=endpoint, status="dead")
        dead = DeadLetter.objects.create(
            delivery=delivery, endpoint=endpoint, event_type="order.created", reason="x"
        )
        objects[uid] = {"app": app, "endpoint": endpoint, "event": event, "dead": dead}
        objects[uid]["delivery"] = delivery
    _, key = api_key_create(
        name="acme", scopes=ApiKey.Scope.values, application=objects["acme"]["app"]
    )
    objects["client"] = _client(key)
    return objects


def test_a_limited_key_lists_only_its_applications_objects(two_apps: dict[str, Any]) -> None:
    client, acme = two_apps["client"], two_apps["acme"]

    def ids(path: str, field: str = "id") -> list[Any]:
        response = client.get(path)
        assert response.status_code == 200
        return [item[field] for item in response.json()["results"]]

    assert ids("/api/v1/applications/", "uid") == ["acme"]
    assert ids("/api/v1/endpoints/") == [acme["endpoint"].pk]
    assert ids("/api/v1/events/") == [acme["event"].pk]
    assert ids("/api/v1/deliveries/") == [acme["delivery"].pk]
    assert ids("/api/v1/dead-letters/") == [acme["dead"].pk]


def test_a_limited_key_gets_404_for_another_applications_objects(
    two_apps: dict[str, Any],
) -> None:
    client, other = two_apps["client"], two_apps["umbrella"]
    endpoint = other["endpoint"].pk
    for method, path, body in [
        ("get", "/api/v1/applications/umbrella/", None),
        ("get", f"/api/v1/endpoints/{endpoint}/", None),
        ("patch", f"/api/v1/endpoints/{endpoint}/", {"description": "mine now"}),
        ("delete", f"/api/v1/endpoints/{endpoint}/", None),
        ("get", f"/api/v1/endpoints/{endpoint}/secret/", None),
        ("post", f"/api/v1/endpoints/{endpoint}/rotate-secret/", {}),
        ("post", f"/api/v1/endpoints/{endpoint}/enable/", {}),
        ("get", f"/api/v1/events/{other['event'].pk}/", None),
        ("get", f"/api/v1/deliveries/{other['delivery'].pk}/", None),
        ("get", f"/api/v1/deliveries/{other['delivery'].pk}/attempts/", None),
        ("post", f"/api/v1/dead-letters/{other['dead'].pk}/replay/", {}),
    ]:
        response = getattr(client, method)(path, body, format="json")
        assert response.status_code == 404, (method, path, response.status_code)
    # nothing of the other application changed; a bulk replay does not reach it either
    assert Endpoint.objects.get(pk=endpoint).description == ""
    assert Endpoint.objects.filter(pk=endpoint).exists()
    assert client.post("/api/v1/dead-letters/replay/", {}, format="json").json()["replayed"] == 1
    assert DeadLetter.objects.get(pk=other["dead"].pk).replayed_at is None


def test_a_limited_key_sends_only_for_its_application(two_apps: dict[str, Any]) -> None:
    client = two_apps["client"]
    # an event naming no application is its own application's
    own = _event(client)
    assert own.status_code == 202
    assert Event.objects.get(pk=own.json()["id"]).application.uid == "acme"
    # one naming another application is refused as if that application did not exist
    other = _event(client, application="umbrella")
    assert other.status_code == 422
    assert other.json()["errors"][0]["detail"] == "Unknown application 'umbrella'."
    batch = client.post(
        "/api/v1/events/batch/",
        [
            {"type": "order.created", "data": {}},
            {"type": "order.created", "data": {}, "application": "umbrella"},
        ],
        format="json",
    )
    assert batch.status_code == 422
    assert Event.objects.filter(application__uid="umbrella").count() == 1


def test_a_limited_key_creates_endpoints_only_in_its_application(
    two_apps: dict[str, Any],
) -> None:
    client = two_apps["client"]
    created = client.post("/api/v1/endpoints/", {"url": "http://127.0.0.1:9/n"}, format="json")
    assert created.status_code == 201
    assert created.json()["application"] == "acme"
    foreign = client.post(
        "/api/v1/endpoints/",
        {"url": "http://127.0.0.1:9/n", "application": "umbrella"},
        format="json",
    )
    assert foreign.status_code == 400
    assert foreign.json()["errors"][0]["pointer"] == "/application"
    # and it may not create applications or change the shared event types
    created = client.post(
        "/api/v1/applications/", {"uid": "x", "name": "x"}, format="json"
    ).status_code
    assert created == 403
    response = client.post("/api/v1/event-types/", {"name": "a.b", "schema": {}}, format="json")
    assert response.status_code == 403
    assert "limited to application 'acme'" in response.json()["detail"]


def test_a_limited_key_can_never_move_anything_out_of_its_application(order_type: None) -> None:
    acme = application_create(uid="acme", name="Acme")
    application_create(uid="other", name="Other")
    _, key = api_key_create(name="acme", scopes=ApiKey.Scope.values, application=acme)
    client = _client(key)
    created = client.post(
        "/api/v1/endpoints/", {"url": "https://acme.example/hook"}, format="json"
    ).json()
    path = f"/api/v1/endpoints/{created['id']}/"
    # every way of changing an endpoint's application: none, another's, PATCH and PUT
    for method in (client.patch, client.put):
        for value in (None, "other"):
            answer = method(
                path, {"url": "https://acme.example/hook", "application": value}, format="json"
            )
            assert answer.status_code == 400, (method, value, answer.json())
            assert answer.json()["errors"][0]["pointer"] == "/application"
    # nor can it create one outside, nor rename its application's uid
    outside = client.post(
        "/api/v1/endpoints/",
        {"url": "https://acme.example/2", "application": None},
        format="json",
    )
    assert outside.status_code == 400
    renamed = client.patch("/api/v1/applications/acme/", {"uid": "acme2"}, format="json")
    assert renamed.status_code == 400
    assert renamed.json()["errors"][0]["pointer"] == "/uid"
    # its own application is still accepted, and nothing moved
    same = client.patch(path, {"application": "acme"}, format="json")
    assert same.status_code == 200
    assert set(Endpoint.objects.values_list("application__uid", flat=True)) == {"acme"}
    # an event it sends with no application, or with null, stays its application's
    _event(client, application=None)
    assert set(Event.objects.values_list("application__uid", flat=True)) == {"acme"}
