"""The admin pages an operator uses render, with the delivery record and its attempts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from deliveries.models import DeadLetter, Delivery, DeliveryAttempt, Event
from schemas_app.services import event_type_create
from webhooks.services import api_key_create, application_create, endpoint_create


@pytest.fixture
def record(db: None) -> Delivery:
    event_type_create(name="order.created", schema={"type": "object"})
    application = application_create(uid="acme", name="Acme")
    endpoint, _ = endpoint_create(url="http://127.0.0.1:9/x", application=application)
    api_key_create(name="k", scopes=["read"])
    event = Event.objects.create(event_type_id="order.created", data={"id": 1})
    delivery = Delivery.objects.create(event=event, endpoint=endpoint, status="dead")
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        outcome="failed",
        started_at=timezone.now(),
        duration_ms=3.2,
        status_code=500,
        response_body="boom-body",
    )
    DeadLetter.objects.create(
        delivery=delivery,
        endpoint=endpoint,
        event_type="order.created",
        reason="HTTP 500 after 1 attempts",
    )
    return delivery


@pytest.mark.parametrize(
    "model",
    [
        "webhooks/application",
        "webhooks/endpoint",
        "webhooks/apikey",
        "schemas_app/eventtype",
        "deliveries/event",
        "deliveries/delivery",
        "deliveries/deadletter",
    ],
)
def test_changelists_render(admin_client: Client, record: Delivery, model: str) -> None:
    response = admin_client.get(f"/admin/{model}/")
    assert response.status_code == 200


def test_delivery_page_shows_its_attempts(admin_client: Client, record: Delivery) -> None:
    response = admin_client.get(f"/admin/deliveries/delivery/{record.pk}/change/")
    assert response.status_code == 200
    assert b"boom-body" in response.content


def test_event_and_endpoint_pages_render(admin_client: Client, record: Delivery) -> Any:
    assert admin_client.get(f"/admin/deliveries/event/{record.event_id}/change/").status_code == 200
    page = admin_client.get(f"/admin/webhooks/endpoint/{record.endpoint_id}/change/")
    assert page.status_code == 200
    assert b"whsec_" not in page.content  # secrets are never shown in the admin


def test_replay_selected_dead_letters_from_the_admin(
    admin_client: Client, record: Delivery
) -> None:
    dead_letter = DeadLetter.objects.get(delivery=record)
    response = admin_client.post(
        "/admin/deliveries/deadletter/",
        {"action": "replay_selected", "_selected_action": [dead_letter.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"Replayed 1 deliveries" in response.content
    dead_letter.refresh_from_db()
    assert dead_letter.replayed_by == "admin:admin"
    record.refresh_from_db()
    assert record.status == "pending"


def test_the_event_type_preview_in_the_admin_shows_the_body_or_why_not(
    admin_client: Client, db: None
) -> None:
    from schemas_app.services import event_type_create

    event_type = event_type_create(
        name="card.charged",
        schema={"type": "object", "required": ["card"]},
        transform={"card": "card", "id": "id"},
        masking=[{"path": "/card", "action": "mask", "keep": 4}],
    )
    url = f"/admin/schemas_app/eventtype/{event_type.pk}/preview/"
    assert admin_client.get(url).status_code == 200
    shown = admin_client.post(url, {"data": '{"card": "4111111111111111", "id": "c-1"}'})
    assert shown.status_code == 200
    assert "************1111" in shown.content.decode()
    assert "4111111111111111" not in shown.content.decode().split("preview-body")[1]
    refused = admin_client.post(url, {"data": '{"id": "c-1"}'})
    assert "Refused" in refused.content.decode()
    assert "card" in refused.content.decode()
    # the body indented for reading, and exactly as sent below it
    page = shown.content.decode()
    assert '"card": "************1111"' in page.replace("&quot;", '"')
    assert 'id="preview-bytes"' in page
    # empty data is data; no data at all is an error on the field
    assert "Refused" in admin_client.post(url, {"data": "{}"}).content.decode()  # card missing
    assert "Give the event" in admin_client.post(url, {"data": ""}).content.decode()


def test_the_endpoint_list_shows_health_and_filters_by_it(
    admin_client: Client, record: Delivery
) -> None:
    from deliveries import metrics

    deltas = metrics.Deltas()
    for _ in range(9):
        deltas.of(record.endpoint_id, "order.created").success(10)
    deltas.of(record.endpoint_id, "order.created").dead = 1
    metrics.stats_add(deltas, at=timezone.now())
    page = admin_client.get("/admin/webhooks/endpoint/").content.decode()
    assert "90.0%" in page  # 9 of 10 in the last day
    assert 'title="9 of 10 deliveries"' in page
    failing = admin_client.get("/admin/webhooks/endpoint/?health=failing").content.decode()
    assert record.endpoint_id not in failing  # failing_since is not set
    healthy = admin_client.get("/admin/webhooks/endpoint/?health=healthy").content.decode()
    assert record.endpoint_id in healthy


def test_rotating_a_secret_in_the_admin_shows_the_new_one_once_and_keeps_the_old_signing(
    admin_client: Client, record: Delivery
) -> None:
    from audit.models import AuditRecord
    from webhooks.models import EndpointSecret

    response = admin_client.post(
        "/admin/webhooks/endpoint/",
        {"action": "rotate_secret", "_selected_action": [record.endpoint_id]},
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    shown = html.split('class="new-secret">')[1].split("<")[0]
    assert shown.startswith("whsec_")
    secrets = EndpointSecret.objects.filter(endpoint_id=record.endpoint_id)
    assert secrets.count() == 2
    assert secrets.filter(expires_at__isnull=False).count() == 1  # the old one, for the grace
    assert AuditRecord.objects.filter(action="endpoint.secret_rotated").exists()
    # never again: the endpoint page does not show it
    page = admin_client.get(f"/admin/webhooks/endpoint/{record.endpoint_id}/change/")
    assert shown not in page.content.decode()


def test_disabling_endpoints_in_the_admin_records_who_did_it(
    admin_client: Client, record: Delivery
) -> None:
    from audit.models import AuditRecord
    from webhooks.models import Endpoint

    response = admin_client.post(
        "/admin/webhooks/endpoint/",
        {"action": "disable", "_selected_action": [record.endpoint_id]},
        follow=True,
    )
    assert b"Disabled 1 endpoints" in response.content
    endpoint = Endpoint.objects.get(pk=record.endpoint_id)
    assert not endpoint.enabled
    assert endpoint.disabled_reason == "disabled by admin:admin"
    assert AuditRecord.objects.filter(action="endpoint.disabled", actor="admin:admin").exists()


def test_the_delivery_page_is_a_timeline_with_the_body_sent_and_each_answer(
    admin_client: Client, record: Delivery
) -> None:
    from datetime import timedelta

    record.attempts.all().delete()
    accepted = record.event.created_at
    body = '{"type":"order.created","data":{"card":"************1111"}}'
    for number, outcome, status, offset in ((1, "retrying", 503, 1), (2, "succeeded", 200, 6)):
        DeliveryAttempt.objects.create(
            delivery=record,
            number=number,
            outcome=outcome,
            started_at=accepted + timedelta(seconds=offset),
            duration_ms=12.5,
            status_code=status,
            request_body=body,
            request_body_bytes=len(body),
            response_body=f"answer-{status}",
        )
    html = admin_client.get(f"/admin/deliveries/delivery/{record.pk}/change/").content.decode()
    import html as html_lib

    timeline = html_lib.unescape(html[html.index('id="delivery-timeline"') :])
    order = [timeline.index(s) for s in ("Event accepted", "Attempt 1", "Attempt 2")]
    assert order == sorted(order)
    assert "+1.000 s after acceptance" in timeline
    assert "HTTP 503" in timeline
    assert "answer-503" in timeline
    assert "answer-200" in timeline
    assert '"card": "************1111"' in timeline  # pretty-printed, as masked when sent
    assert f"{len(body)} bytes" in timeline
    assert "Dead letter" in timeline


def test_a_staff_user_who_may_only_view_cannot_run_the_actions_that_change_things(
    record: Delivery,
) -> None:
    from django.contrib.auth.models import Permission, User

    from webhooks.models import EndpointSecret

    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_endpoint", "view_deadletter"])
    )
    client = Client()
    client.force_login(viewer)
    page = client.get("/admin/webhooks/endpoint/").content.decode()
    assert "rotate_secret" not in page
    client.post(
        "/admin/webhooks/endpoint/",
        {"action": "rotate_secret", "_selected_action": [record.endpoint_id]},
    )
    assert EndpointSecret.objects.filter(endpoint_id=record.endpoint_id).count() == 1
    dead_letter = DeadLetter.objects.get(delivery=record)
    assert "replay_selected" not in client.get("/admin/deliveries/deadletter/").content.decode()
    client.post(
        "/admin/deliveries/deadletter/",
        {"action": "replay_selected", "_selected_action": [dead_letter.pk]},
    )
    dead_letter.refresh_from_db()
    assert dead_letter.replayed_at is None
    # header values are secrets: a viewer sees the names only
    from webhooks.models import Endpoint

    Endpoint.objects.filter(pk=record.endpoint_id).update(
        headers={"authorization": "Bearer top-secret-token"}
    )
    page = client.get(f"/admin/webhooks/endpoint/{record.endpoint_id}/change/")
    assert page.status_code == 200
    assert "authorization" in page.content.decode()
    assert "top-secret-token" not in page.content.decode()


def test_the_admin_endpoint_form_runs_the_api_checks(record: Delivery, settings: Any) -> None:
    from django.forms.models import modelform_factory

    from deliveries.endpoint_admin import EndpointAdmin
    from webhooks.models import Endpoint

    endpoint = Endpoint.objects.get(pk=record.endpoint_id)
    Form = modelform_factory(Endpoint, form=EndpointAdmin.form, fields="__all__")
    base = Form(instance=endpoint)
    data = {name: base[name].value() for name in base.fields}
    data = {k: v for k, v in data.items() if v is not None and v is not False}
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    for field, value, says in [
        ("url", "http://[::127.0.0.1]/hook", "cannot receive webhooks"),
        ("url", "http://169.254.169.254/", "cannot receive webhooks"),
        ("headers", '{"X-Bad": "a\\r\\nb"}', "visible ASCII"),
        ("headers", '{"webhook-id": "x"}', "set by the service"),
        ("retry_schedule", ",".join(["1"] * 21), "at most 20"),
        ("transforms", '{"order.created": {"x": "a.["}}', "invalid expression"),
        ("masking", '{"order.created": [{"path": "x", "action": "nope"}]}', ""),
    ]:
        form = Form({**data, field: value}, instance=endpoint)
        assert not form.is_valid(), (field, value)
        assert says in str(form.errors), (field, form.errors)
    assert Endpoint.objects.get(pk=endpoint.pk).url == endpoint.url


def _type_form(**fields: Any) -> dict[str, Any]:
    """The event type form as a browser posts it (the inline of versions is read-only)."""
    form = {
        "name": "invoice.paid",
        "description": "",
        "schema": "{}",
        "example": "null",
        "transform": "null",
        "output_schema": "null",
        "masking": "null",
        "sensitive_fields": "[]",
        "retry_schedule": "",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
    }
    return form | fields


@pytest.mark.django_db
def test_the_admin_makes_and_versions_an_event_type_schema(admin_client: Client, api: Any) -> None:
    from schemas_app.models import EventType

    schema = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
    # a type made in the admin has the schema given there: events are checked against it
    answer = admin_client.post(
        "/admin/schemas_app/eventtype/add/", _type_form(schema=json.dumps(schema))
    )
    assert answer.status_code == 302, answer.content.decode()[-3000:]
    accepted = api.post(
        "/api/v1/events/", {"type": "invoice.paid", "data": {"id": "i-1"}}, format="json"
    )
    assert accepted.status_code == 202, accepted.content
    refused = api.post("/api/v1/events/", {"type": "invoice.paid", "data": {}}, format="json")
    assert refused.status_code == 422
    # the change page shows the schema indented, and refuses a breaking change with the report
    event_type = EventType.objects.get(name="invoice.paid")
    url = f"/admin/schemas_app/eventtype/{event_type.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert "&quot;required&quot;: [\n" in page  # pretty-printed
    stricter = {**schema, "required": ["id", "total"]}
    answer = admin_client.post(url, _type_form(schema=json.dumps(stricter)))
    assert answer.status_code == 200
    assert "Breaking changes against version 1" in answer.content.decode()
    assert "allow_breaking" in answer.content.decode()
    assert event_type.versions.count() == 1
    # with allow_breaking it becomes version 2, and events are checked against it
    answer = admin_client.post(url, _type_form(schema=json.dumps(stricter), allow_breaking="on"))
    assert answer.status_code == 302
    assert event_type.versions.count() == 2
    again = api.post(
        "/api/v1/events/", {"type": "invoice.paid", "data": {"id": "i-2"}}, format="json"
    )
    assert again.status_code == 422
    # a schema this service will not store is an error on the field, nothing saved
    answer = admin_client.post(url, _type_form(schema=json.dumps({"$ref": "file:///etc/passwd"})))
    assert answer.status_code == 200
    assert event_type.versions.count() == 2
