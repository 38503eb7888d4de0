"""Event types through the API: schema checked on save, changed schema makes a new version."""

from __future__ import annotations

from rest_framework.test import APIClient

from schemas_app.models import SchemaVersion


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
        {"schema": {"type": "object", "required": ["id"]}},
        format="json",
    )
    assert changed.status_code == 200
    assert changed.json()["version"] == 2
    assert changed.json()["schema"] == {"type": "object", "required": ["id"]}
    assert SchemaVersion.objects.filter(event_type__name="order.created").count() == 2
    listed = api.get("/api/v1/event-types/").json()
    # the catalog also lists the operational `endpoint.disabled` (unless a flush removed it)
    names = [t["name"] for t in listed["results"]]
    assert [n for n in names if n != "endpoint.disabled"] == ["order.created"]


def test_invalid_schema_is_refused_with_a_pointer(api: APIClient) -> None:
    response = api.post(
        "/api/v1/event-types/", {"name": "bad.schema", "schema": {"type": "nope"}}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["pointer"] == "/schema"


def test_duplicate_and_malformed_names_are_refused(api: APIClient) -> None:
    api.post("/api/v1/event-types/", {"name": "a.b", "schema": {}}, format="json")
    dup = api.post("/api/v1/event-types/", {"name": "a.b", "schema": {}}, format="json")
    assert dup.status_code == 400
    assert dup.json()["errors"][0]["pointer"] == "/name"
    bad = api.post("/api/v1/event-types/", {"name": "a b", "schema": {}}, format="json")
    assert bad.status_code == 400
