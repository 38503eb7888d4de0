"""Event types through the API: schema checked on save, changed schema makes a new version."""

from __future__ import annotations

import json

from django.utils import timezone
from jsonschema import Draft202012Validator
from rest_framework.test import APIClient

from schemas_app.models import SchemaVersion
from schemas_app.payloads import build_body
from webhooks.operational import OPERATIONAL_EVENT_TYPES


def test_create_read_and_version_an_event_type(api: APIClient) -> None:
    created = api.post(
        "/api/v1/event-types/",
        {"name": "order.created", "description": "d", "schema": {"type": "object"}},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["version"] == 1
    same = api.patch(
        "/api/v1/event-types/order.created/", {"schema": {"type": "object"}}, format="json"
    )
    assert same.json()["version"] == 1
    changed = api.patch(
        "/api/v1/event-types/order.created/",
        {"schema": {"type": "object", "required": ["id"]}, "allow_breaking": True},
        format="json",
    )
    assert changed.status_code == 200
    assert changed.json()["version"] == 2
    assert changed.json()["breaking_changes"][0]["kind"] == "new_required_property"
    assert changed.json()["schema"] == {"type": "object", "required": ["id"]}
    assert SchemaVersion.objects.filter(event_type__name="order.created").count() == 2
    listed = api.get("/api/v1/event-types/").json()
    # the catalog also lists the operational types (unless a flush removed them)
    names = [t["name"] for t in listed["results"]]
    assert [n for n in names if n not in OPERATIONAL_EVENT_TYPES] == ["order.created"]


def test_invalid_schema_is_refused_with_a_pointer(api: APIClient) -> None:
    response = api.post(
        "/api/v1/event-types/", {"name": "bad.schema", "schema": {"type": "nope"}}, format="json"
    )
    # well-formed JSON that is not a schema we accept: 422, pointing into the schema
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "/schema/type"


def test_duplicate_and_malformed_names_are_refused(api: APIClient) -> None:
    api.post("/api/v1/event-types/", {"name": "a.b", "schema": {}}, format="json")
    dup = api.post("/api/v1/event-types/", {"name": "a.b", "schema": {}}, format="json")
    assert dup.status_code == 400
    assert dup.json()["errors"][0]["pointer"] == "/name"
    bad = api.post("/api/v1/event-types/", {"name": "a b", "schema": {}}, format="json")
    assert bad.status_code == 400


def test_a_breaking_schema_change_is_refused_with_its_report(api: APIClient) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "string"}, "total": {}}}
    api.post("/api/v1/event-types/", {"name": "order.paid", "schema": schema}, format="json")
    narrowed = {"type": "object", "properties": {"id": {"type": "integer"}}}
    refused = api.patch("/api/v1/event-types/order.paid/", {"schema": narrowed}, format="json")
    assert refused.status_code == 422
    errors = refused.json()["errors"]
    assert [(e["pointer"], e["keyword"]) for e in errors] == [
        ("/schema/properties/id/type", "type_narrowed"),
        ("/schema/properties/total", "removed_property"),
    ]
    assert 'send "allow_breaking": true' in errors[0]["detail"]
    assert SchemaVersion.objects.filter(event_type__name="order.paid").count() == 1
    # with allow_breaking it is saved, and the version keeps the report and its author
    saved = api.patch(
        "/api/v1/event-types/order.paid/",
        {"schema": narrowed, "allow_breaking": True},
        format="json",
    ).json()
    assert saved["version"] == 2
    assert len(saved["breaking_changes"]) == 2
    v2 = SchemaVersion.objects.get(event_type__name="order.paid", version=2)
    assert v2.created_by.startswith("api-key:")
    assert [c["kind"] for c in v2.changes] == ["type_narrowed", "removed_property"]


def test_the_catalog_lists_versions_and_an_example_checked_against_the_schema(
    api: APIClient,
) -> None:
    schema = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
    bad = api.post(
        "/api/v1/event-types/",
        {"name": "user.created", "schema": schema, "example": {"id": 7}},
        format="json",
    )
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["pointer"] == "/example"
    created = api.post(
        "/api/v1/event-types/",
        {"name": "user.created", "schema": schema, "example": {"id": "u-1"}},
        format="json",
    )
    assert created.status_code == 201, created.json()
    listed = api.get("/api/v1/event-types/user.created/").json()
    assert listed["example"] == {"id": "u-1"}
    assert [v["version"] for v in listed["versions"]] == [1]
    assert listed["versions"][0]["schema"] == schema


def test_the_outbound_payload_schema_validates_what_consumers_receive(api: APIClient) -> None:
    schema = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
    api.post("/api/v1/event-types/", {"name": "user.created", "schema": schema}, format="json")
    served = api.get("/api/v1/event-types/user.created/schema/")
    assert served.status_code == 200
    payload_schema = served.json()
    Draft202012Validator.check_schema(payload_schema)
    body = json.loads(
        build_body(event_type="user.created", occurred_at=timezone.now(), data={"id": "u-1"})
    )
    assert list(Draft202012Validator(payload_schema).iter_errors(body)) == []
    wrong = {**body, "type": "user.deleted"}
    assert list(Draft202012Validator(payload_schema).iter_errors(wrong))
