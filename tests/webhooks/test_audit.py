"""The audit log: every configuration change recorded with who, what, before and after (no
secrets), append-only, and a hash chain that shows tampering."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditRecord
from deliveries.models import DeadLetter, Delivery, Event
from deliveries.services.endpoints import endpoint_disable
from schemas_app.services import event_type_create
from webhooks.models import ApiKey, Application, Endpoint
from webhooks.services import api_key_create

pytestmark = pytest.mark.django_db


def _actions() -> list[tuple[str, str]]:
    return list(AuditRecord.objects.order_by("id").values_list("action", "actor"))


def test_endpoint_changes_through_the_api_are_audited_without_secrets(api: APIClient) -> None:
    key_actor = next(iter(AuditRecord.objects.values_list("actor", flat=True)), None)
    assert key_actor == "system"  # the fixture's key was created by a service call
    prefix = ApiKey.objects.get().prefix
    created = api.post(
        "/api/v1/endpoints/",
        {"url": "http://127.0.0.1:9/a", "headers": {"X-Token": "s3cret-value"}},
        format="json",
    ).json()
    ep = created["id"]
    api.patch(f"/api/v1/endpoints/{ep}/", {"description": "orders"}, format="json")
    api.patch(f"/api/v1/endpoints/{ep}/", {"description": "orders"}, format="json")  # no change
    api.post(f"/api/v1/endpoints/{ep}/rotate-secret/", {"grace_seconds": 60}, format="json")
    api.patch(f"/api/v1/endpoints/{ep}/", {"enabled": False}, format="json")
    api.post(f"/api/v1/endpoints/{ep}/enable/", {}, format="json")
    api.delete(f"/api/v1/endpoints/{ep}/")

    who = f"api-key:{prefix}"
    assert _actions()[1:] == [
        ("endpoint.created", who),
        ("endpoint.updated", who),
        ("endpoint.secret_rotated", who),
        ("endpoint.updated", who),
        ("endpoint.enabled", who),
        ("endpoint.deleted", who),
    ]
    updated = AuditRecord.objects.filter(action="endpoint.updated").order_by("id").first()
    assert updated is not None
    assert (updated.before["description"], updated.after["description"]) == ("", "orders")
    assert updated.object_id == ep
    # no secret in any record: neither the signing secrets nor the header values
    dump = str(list(AuditRecord.objects.values("before", "after")))
    assert "s3cret-value" not in dump
    assert "whsec_" not in dump
    assert created["secret"].removeprefix("whsec_") not in dump
    assert "[redacted]" in dump


def test_automatic_disable_key_revocation_and_replays_are_audited(db: None) -> None:
    event_type_create(name="order.created", schema={})
    endpoint = Endpoint.objects.create(url="http://127.0.0.1:9/x")
    event = Event.objects.create(event_type_id="order.created", data={})
    delivery = Delivery.objects.create(event=event, endpoint=endpoint, status="dead")
    DeadLetter.objects.create(
        delivery=delivery, endpoint=endpoint, event_type="order.created", reason="x"
    )
    api_key, key = api_key_create(name="ops", scopes=["dead-letters:replay"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.post("/api/v1/dead-letters/replay/", {}, format="json").status_code == 202
    endpoint_disable(endpoint_id=endpoint.pk, reason="410 Gone")
    call_command("revoke_api_key", api_key.prefix, stdout=io.StringIO())
    assert _actions() == [
        ("event_type.created", "system"),
        ("api_key.created", "system"),
        ("dead_letters.replayed", f"api-key:{api_key.prefix}"),
        ("endpoint.disabled", "system"),
        ("api_key.revoked", "cli:revoke_api_key"),
    ]
    replayed = AuditRecord.objects.get(action="dead_letters.replayed")
    assert replayed.after["count"] == 1


def test_admin_edits_are_audited(admin_client: Client, db: None) -> None:
    endpoint = Endpoint.objects.create(url="http://127.0.0.1:9/x")
    page = admin_client.get(f"/admin/webhooks/endpoint/{endpoint.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data.update(url="http://127.0.0.1:9/y", description="moved", event_types="", headers="{}")
    data.update({"secrets-TOTAL_FORMS": 0, "secrets-INITIAL_FORMS": 0})
    response = admin_client.post(f"/admin/webhooks/endpoint/{endpoint.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    (entry,) = AuditRecord.objects.filter(action="endpoint.updated")
    assert entry.actor == "admin:admin"
    assert (entry.before["url"], entry.after["url"]) == (
        "http://127.0.0.1:9/x",
        "http://127.0.0.1:9/y",
    )
    # and the log itself cannot be changed from the admin
    listing = admin_client.get("/admin/webhooks/auditrecord/")
    assert listing.status_code == 200
    assert admin_client.get("/admin/webhooks/auditrecord/add/").status_code == 403


def test_records_cannot_be_changed_or_deleted_in_the_application(api: APIClient) -> None:
    entry = AuditRecord.objects.get()
    entry.actor = "someone else"
    with pytest.raises(TypeError, match="append-only"):
        entry.save()
    with pytest.raises(TypeError, match="append-only"):
        entry.delete()
    with pytest.raises(TypeError, match="append-only"):
        AuditRecord.objects.filter(pk=entry.pk).update(actor="x")
    with pytest.raises(TypeError, match="append-only"):
        AuditRecord.objects.all().delete()


@pytest.mark.parametrize(
    "statement",
    ["UPDATE {t} SET actor = 'nobody'", "DELETE FROM {t}"],
    ids=["update", "delete"],
)
def test_the_database_itself_refuses_to_change_or_delete_records(
    api: APIClient, statement: str
) -> None:
    from django.db import DatabaseError, transaction

    assert AuditRecord.objects.exists()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement.format(t=AuditRecord._meta.db_table))
    assert AuditRecord.objects.filter(actor="nobody").count() == 0


def _verify() -> str:
    out = io.StringIO()
    call_command("verify_audit_chain", stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("UPDATE {t} SET actor = 'nobody' WHERE id = %s", "its content does not match its hash"),
        ("UPDATE {t} SET after = '{{}}'::jsonb WHERE id = %s", "its content does not match"),
        ("DELETE FROM {t} WHERE id = %s", "does not link to the record before it"),
    ],
    ids=["edited-actor", "edited-after", "deleted"],
)
def test_tampering_in_the_database_breaks_the_chain(
    make_api_client: Any, tamper: str, reason: str
) -> None:
    for n in range(4):
        make_api_client(["read"]).get("/")  # each creates a key: a record
        Endpoint.objects.create(url=f"http://127.0.0.1:9/{n}")
    api = make_api_client()
    for n in range(3):
        api.post("/api/v1/endpoints/", {"url": f"http://127.0.0.1:9/e{n}"}, format="json")
    assert "intact: 8 records verified" in _verify()
    victim = AuditRecord.objects.order_by("id")[3]
    table = AuditRecord._meta.db_table
    with connection.cursor() as cursor:  # behind the application's back, trigger off (owner)
        cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER audit_append_only")
        cursor.execute(tamper.format(t=table), [victim.pk])
        cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER audit_append_only")
    broken_at = victim.pk if "UPDATE" in tamper else victim.pk + 1
    with pytest.raises(CommandError, match=f"broken at record {broken_at}: {reason}"):
        _verify()


def test_event_type_and_application_changes_are_audited_and_listed(
    api: APIClient, make_api_client: Any
) -> None:
    assert (
        api.post(
            "/api/v1/event-types/", {"name": "order.paid", "schema": {}}, format="json"
        ).status_code
        == 201
    )
    api.patch(
        "/api/v1/event-types/order.paid/",
        {"masking": [{"path": "/card", "action": "redact"}]},
        format="json",
    )
    api.post("/api/v1/applications/", {"uid": "acme", "name": "Acme"}, format="json")
    api.post("/api/v1/applications/", {"uid": "other", "name": "Other"}, format="json")
    api.patch("/api/v1/applications/acme/", {"name": "Acme Inc"}, format="json")
    api.post(
        "/api/v1/endpoints/", {"url": "http://127.0.0.1:9/a", "application": "acme"}, format="json"
    )
    api.post(
        "/api/v1/endpoints/",
        {"url": "http://127.0.0.1:9/o", "application": "other"},
        format="json",
    )
    api.delete("/api/v1/applications/other/")
    actions = list(AuditRecord.objects.order_by("id").values_list("action", flat=True))
    for expected in (
        "event_type.created",
        "event_type.updated",
        "application.created",
        "application.updated",
        "application.deleted",
    ):
        assert expected in actions
    updated = AuditRecord.objects.get(action="event_type.updated")
    assert updated.before["masking"] is None
    assert updated.after["masking"] == [{"path": "/card", "action": "redact"}]
    # the API lists them with filters
    listed = api.get("/api/v1/audit-records/", {"object_type": "application"}).json()
    assert {r["action"] for r in listed["results"]} == {
        "application.created",
        "application.updated",
        "application.deleted",
    }
    assert api.get("/api/v1/audit-records/", {"since": "2026-13-45T00:00"}).status_code == 400
    # a key limited to acme sees acme's records only
    acme = Application.objects.get(uid="acme")
    _, key = api_key_create(name="acme", scopes=["read"], application=acme)
    limited = APIClient()
    limited.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    seen = limited.get("/api/v1/audit-records/").json()["results"]
    assert seen
    assert {r["application"] for r in seen} == {"acme"}
    assert "endpoint.created" in {r["action"] for r in seen}
    other = AuditRecord.objects.get(action="application.deleted")
    assert limited.get(f"/api/v1/audit-records/{other.pk}/").status_code == 404


def test_the_admin_cannot_delete_or_edit_the_delivery_record(admin_client: Client) -> None:
    event_type_create(name="order.created", schema={})
    endpoint = Endpoint.objects.create(url="http://127.0.0.1:9/x")
    event = Event.objects.create(event_type_id="order.created", data={})
    delivery = Delivery.objects.create(event=event, endpoint=endpoint, status="dead")
    dead = DeadLetter.objects.create(
        delivery=delivery, endpoint=endpoint, event_type="order.created", reason="x"
    )
    for model, pk in (("delivery", delivery.pk), ("event", event.pk), ("deadletter", dead.pk)):
        page = admin_client.get(f"/admin/deliveries/{model}/{pk}/change/")
        assert page.status_code == 200
        assert b"deletelink" not in page.content
        assert admin_client.post(f"/admin/deliveries/{model}/{pk}/delete/").status_code == 403
    assert Delivery.objects.filter(pk=delivery.pk).exists()
    assert Event.objects.filter(pk=event.pk).exists()
    # the bulk delete action is not offered either
    changelist = admin_client.get("/admin/deliveries/delivery/")
    assert b"delete_selected" not in changelist.content


def test_the_admin_event_type_form_runs_the_api_rules_and_is_audited(
    admin_client: Client,
) -> None:
    created = event_type_create(name="order.created", schema={})
    url = f"/admin/schemas_app/eventtype/{created.pk}/change/"
    form = {
        "name": "order.created",
        "description": "",
        "schema": "{}",  # prefilled with the current schema, as a browser posts it
        "example": "null",
        "transform": '{"total": "order.["}',
        "output_schema": "null",
        "masking": "null",
        "sensitive_fields": "[]",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
    }
    refused = admin_client.post(url, form)
    assert refused.status_code == 200  # the form again, with the error
    assert b"invalid expression" in refused.content
    form["transform"] = '{"total": "order.total"}'
    saved = admin_client.post(url, form)
    assert saved.status_code == 302, saved.content[:2000]
    assert AuditRecord.objects.filter(action="event_type.updated", actor__startswith="admin:")
