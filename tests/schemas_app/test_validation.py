"""Strict schema validation reports every problem with a JSON pointer and the failing keyword."""

from __future__ import annotations

import pytest

from schemas_app.validation import InvalidSchema, check_schema, validate

ORDER = {
    "type": "object",
    "required": ["id", "amount", "items"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "amount": {"type": "integer", "minimum": 0},
        "email": {"type": "string", "format": "email"},
        "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}},
    },
}


def test_valid_instance_has_no_violations() -> None:
    assert validate({"id": "o1", "amount": 5, "items": []}, ORDER, cache_key=("order", 1)) == []


def test_every_violation_is_reported_with_pointer_and_keyword() -> None:
    violations = validate(
        {"id": 7, "amount": -1, "items": [{"sku": "a"}, {}], "extra": True},
        ORDER,
        cache_key=("order", 1),
    )
    found = {(v.pointer, v.keyword) for v in violations}
    assert found == {
        ("/id", "type"),
        ("/amount", "minimum"),
        ("/items/1", "required"),
        ("", "additionalProperties"),
    }


def test_format_assertions_are_on() -> None:
    violations = validate(
        {"id": "o", "amount": 1, "items": [], "email": "not-an-email"},
        ORDER,
        cache_key=("order", 1),
    )
    assert [(v.pointer, v.keyword) for v in violations] == [("/email", "format")]


def test_a_new_version_key_uses_the_new_schema() -> None:
    assert validate({"a": 1}, {"type": "object"}, cache_key=("t", 1)) == []
    assert validate({"a": 1}, {"type": "array"}, cache_key=("t", 2))[0].keyword == "type"


def test_errors_are_capped() -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    assert len(validate(list(range(100)), schema, cache_key=("cap", 1), limit=5)) == 5


@pytest.mark.parametrize("schema", [{"type": "nope"}, {"minimum": "x"}, [], "str"])
def test_invalid_schemas_are_refused_with_a_message(schema: object) -> None:
    with pytest.raises(InvalidSchema):
        check_schema(schema)
