"""Numbers and keys are kept exactly as sent, or refused with 422 and the pointer."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from deliveries.models import Event
from schemas_app.services import event_type_create
from webhooks_project.parsers import inexact_value

pytestmark = pytest.mark.django_db


@pytest.fixture
def order_type(db: None) -> None:
    event_type_create(name="order.created", schema={"type": "object"})


def _post(api: APIClient, body: bytes, path: str = "/api/v1/events/") -> Any:
    return api.generic("POST", path, body, content_type="application/json")


@pytest.mark.parametrize(
    ("body", "pointer", "keyword"),
    [
        (
            b'{"type":"order.created","data":{"amount":123456789012345678901234567890}}',
            "/data/amount",
            "number",
        ),
        (b'{"type":"order.created","data":{"n":-9223372036854775809}}', "/data/n", "number"),
        (
            b'{"type":"order.created","data":{"x":[1, 0.12345678901234567890123]}}',
            "/data/x/1",
            "number",
        ),
        (b'{"type":"order.created","data":{"a":1,"a":2}}', "/data/a", "duplicate_key"),
        (b'{"type":"order.created","type":"order.created","data":{}}', "/type", "duplicate_key"),
    ],
)
def test_a_value_that_would_change_is_refused_with_its_pointer(
    api: APIClient, order_type: None, body: bytes, pointer: str, keyword: str
) -> None:
    answer = _post(api, body)
    assert answer.status_code == 422, answer.content
    (error,) = answer.json()["errors"]
    assert (error["pointer"], error["keyword"]) == (pointer, keyword)
    assert not Event.objects.exists()


def test_the_batch_names_the_item(api: APIClient, order_type: None) -> None:
    body = b'[{"type":"order.created","data":{}},{"type":"order.created","data":{"b":1e400}}]'
    answer = _post(api, body, "/api/v1/events/batch/")
    # 1e400 is infinity as a double: orjson refuses it as malformed, before anything else
    assert answer.status_code in (400, 422)
    body = b'[{"type":"order.created","data":{}},{"type":"order.created","data":{"b":1,"b":1}}]'
    answer = _post(api, body, "/api/v1/events/batch/")
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["pointer"] == "/1/data/b"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_literals_are_not_json(
    api: APIClient, order_type: None, literal: bytes
) -> None:
    answer = _post(api, b'{"type":"order.created","data":{"x":' + literal + b"}}")
    assert answer.status_code == 400
    assert answer.json()["error"] == "parse_error"


def test_numbers_that_survive_are_stored_exactly(api: APIClient, order_type: None) -> None:
    body = (
        b'{"type":"order.created","data":{"a":0.1,"b":1.10,"c":1e5,"d":18446744073709551615,'
        b'"e":-9223372036854775808,"f":12345678901234567,"g":"1234567890123456789012345 : x",'
        b'"h":{"a":1},"i":[{"a":1},{"a":2}],"k\\"q":"v\\\\","z":2.5e-3}}'
    )
    answer = _post(api, body)
    assert answer.status_code == 202, answer.content
    data = Event.objects.get().data
    assert data["d"] == 18446744073709551615
    assert data["e"] == -9223372036854775808
    assert data["f"] == 12345678901234567
    assert data["a"] == 0.1
    assert data["z"] == 0.0025


def test_the_checker_alone() -> None:
    assert inexact_value(b'{"a": "\\"", "b": 1}') is None
    assert inexact_value(b'{"a": {"b": [1, {"c": 1, "c": 1}]}}')["pointer"] == "/a/b/1/c"
    assert inexact_value(b'{"a/b~": 1e999}')["pointer"] == "/a~1b~0"
