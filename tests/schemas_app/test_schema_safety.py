"""Hostile schemas: a `$ref` never reads a file or fetches a URL, references that cannot resolve
or never end are refused at registration, and no schema can make one event expensive."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from deliveries.models import Event
from schemas_app.models import EventType, SchemaVersion
from schemas_app.validation import InvalidSchema, check_schema, validate

pytestmark = pytest.mark.django_db


@pytest.fixture
def counting_server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that serves a schema and remembers every path asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            asked.append(self.path)
            body = b'{"type": "string", "description": "INTERNAL-ONLY"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()


def _register(api: APIClient, schema: Any, **extra: Any) -> Any:
    return api.post(
        "/api/v1/event-types/",
        {"name": "order.created", "schema": schema, **extra},
        format="json",
    )


def test_a_ref_to_a_local_file_is_refused_and_the_file_is_never_read(
    api: APIClient, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"const": "TOP-SECRET-CONTENT"}')
    answer = _register(api, {"properties": {"a": {"$ref": secret.as_uri()}}})
    assert answer.status_code == 422, answer.json()
    (error,) = answer.json()["errors"]
    assert error["pointer"] == "/schema/properties/a/$ref"
    assert "does not resolve inside this schema" in error["detail"]
    assert "TOP-SECRET" not in answer.content.decode()
    assert not EventType.objects.filter(name="order.created").exists()


def test_a_ref_to_a_url_is_refused_and_nothing_is_fetched(
    api: APIClient, counting_server: tuple[str, list[str]]
) -> None:
    base, asked = counting_server
    for schema, at in [
        ({"$ref": f"{base}/x.json"}, "/schema/$ref"),
        ({"$id": f"{base}/root.json", "items": {"$ref": "other.json"}}, "/schema/items/$ref"),
        ({"$ref": "urn:x"}, "/schema/$ref"),
        ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "/schema/properties/a/$ref"),
    ]:
        answer = _register(api, schema)
        assert answer.status_code == 422, (schema, answer.json())
        assert answer.json()["errors"][0]["pointer"] == at
    assert asked == []
    # the output schema follows the same rule
    answer = _register(api, {}, output_schema={"$ref": f"{base}/out.json"})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["pointer"] == "/output_schema/$ref"
    assert asked == []


def test_a_reference_cycle_that_never_descends_is_refused(api: APIClient) -> None:
    cycle = {
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
        "$ref": "#/$defs/a",
    }
    answer = _register(api, cycle)
    assert answer.status_code == 422
    assert "cycle" in answer.json()["errors"][0]["detail"]
    assert _register(api, {"$ref": "#"}).status_code == 422
    # a recursive schema that descends into the instance (a tree) is fine and validates
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "$ref": "#/$defs/node",
    }
    assert _register(api, tree).status_code == 201
    bad = api.post(
        "/api/v1/events/",
        {"type": "order.created", "data": {"children": [{"children": [1]}]}},
        format="json",
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["pointer"] == "/data/children/0/children/0"


def test_the_meta_schema_resolves_from_the_shipped_copy(api: APIClient) -> None:
    meta = {"$ref": "https://json-schema.org/draft/2020-12/schema"}
    assert _register(api, meta).status_code == 201
    assert validate({"type": 5}, meta, cache_key=("meta", 1))[0].keyword == "anyOf"


def test_a_schema_stored_before_these_rules_answers_422_never_500(
    api: APIClient, tmp_path: Path
) -> None:
    # given a type whose stored schema points outside itself (as older versions accepted)
    event_type = EventType.objects.create(name="legacy.thing")
    SchemaVersion.objects.create(
        event_type=event_type, version=1, schema={"$ref": (tmp_path / "x.json").as_uri()}
    )
    # then events and previews of it are refused with a clear error, and nothing is stored
    answer = api.post("/api/v1/events/", {"type": "legacy.thing", "data": {}}, format="json")
    assert answer.status_code == 422, answer.content
    assert answer.json()["errors"][0]["keyword"] == "schema"
    preview = api.post("/api/v1/event-types/legacy.thing/preview/", {"data": {}}, format="json")
    assert preview.status_code == 422
    assert not Event.objects.exists()


def test_patterns_run_without_backtracking_and_unsupported_ones_are_refused(
    api: APIClient,
) -> None:
    assert _register(api, {"properties": {"a": {"pattern": "^(a+)+$"}}}).status_code == 201
    # a catastrophic input for a backtracking engine is answered at once (RE2 is linear)
    answer = api.post(
        "/api/v1/events/",
        {"type": "order.created", "data": {"a": "a" * 50_000 + "!"}},
        format="json",
    )
    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert error["pointer"] == "/data/a"
    assert len(error["detail"]) <= 300  # the message does not echo 50 KB of input
    refused = api.post(
        "/api/v1/event-types/",
        {"name": "other", "schema": {"patternProperties": {"(x)\\1": {}}}},
        format="json",
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["pointer"] == "/schema/patternProperties/(x)\\1"
    assert "RE2" in refused.json()["errors"][0]["detail"]


def test_unique_items_is_linear_and_keeps_json_equality() -> None:
    schema = {"type": "array", "uniqueItems": True}
    many = [{"id": i, "tags": [i, str(i)]} for i in range(20_000)]
    assert validate(many, schema, cache_key=("u", 1)) == []
    assert validate([*many, {"tags": [0, "0"], "id": 0}], schema, cache_key=("u", 1))
    assert validate([1, 1.0], schema, cache_key=("u", 1))  # equal numbers in JSON
    assert validate([1, True], schema, cache_key=("u", 1)) == []  # a boolean is not a number
    assert validate([0, False], schema, cache_key=("u", 1)) == []


def test_a_schema_built_to_explode_is_stopped_by_the_budget() -> None:
    # nested anyOf over a recursive reference: exponential in the depth without a budget
    branch = {"type": "object", "properties": {"x": {"$ref": "#/$defs/n"}}}
    bomb = {
        "$defs": {"n": {"anyOf": [{**branch, "required": ["y"]}, {**branch, "required": ["z"]}]}},
        "$ref": "#/$defs/n",
    }
    check_schema(bomb)  # a legal schema: only its cost is a problem
    instance: dict[str, Any] = {}
    for _ in range(30):
        instance = {"x": instance}
    (violation,) = validate(instance, bomb, cache_key=("bomb", 1))
    assert violation.keyword == "budget"
    # while a real event of 60,000 values against an ordinary schema fits its budget
    ordinary = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "object"}}},
    }
    big = {"items": [{"a": i, "b": "x"} for i in range(20_000)]}
    assert validate(big, ordinary, cache_key=("ordinary", 1)) == []


def test_invalid_schema_documents_carry_their_pointer() -> None:
    with pytest.raises(InvalidSchema) as caught:
        check_schema({"properties": {"a": {"type": "nope"}}})
    assert caught.value.pointer == "/properties/a/type"


def test_a_problem_is_reported_where_it_stands_not_where_a_ref_leads_to_it() -> None:
    schema = {
        "properties": {"b": {"type": "string", "pattern": "(w)\\1"}},
        "$defs": {"x": {"$ref": "#/properties/b"}},
    }
    with pytest.raises(InvalidSchema) as caught:
        check_schema(schema)
    assert caught.value.pointer == "/properties/b/pattern"
