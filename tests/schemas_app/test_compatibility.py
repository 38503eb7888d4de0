"""The compatibility checker: each kind of breaking change found where it is, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from schemas_app.compatibility import breaking_changes

BASE: dict[str, Any] = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "string"},
        "total": {"type": "number"},
        "status": {"enum": ["new", "paid", "shipped"]},
        "lines": {"type": "array", "items": {"type": "object", "properties": {"sku": {}}}},
        "customer": {"type": "object", "properties": {"email": {"type": "string"}}},
    },
}


def _with(**changes: Any) -> dict[str, Any]:
    schema = {**BASE, "properties": {**BASE["properties"]}}
    for key, value in changes.items():
        if key.startswith("p_"):
            schema["properties"][key[2:]] = value
        else:
            schema[key] = value
    return schema


@pytest.mark.parametrize(
    ("new", "kind", "pointer"),
    [
        (_with(required=["id", "total"]), "new_required_property", "/required"),
        (
            {**BASE, "properties": {k: v for k, v in BASE["properties"].items() if k != "total"}},
            "removed_property",
            "/properties/total",
        ),
        (_with(p_total={"type": "integer"}), "type_narrowed", "/properties/total/type"),
        (_with(p_id={"type": ["integer"]}), "type_narrowed", "/properties/id/type"),
        (_with(p_status={"enum": ["new", "paid"]}), "enum_narrowed", "/properties/status/enum"),
        (_with(p_status={"const": "new"}), "enum_narrowed", "/properties/status/enum"),
        (
            _with(additionalProperties=False),
            "additional_properties_disallowed",
            "/additionalProperties",
        ),
        (
            _with(p_lines={"type": "array", "items": {"type": "object", "properties": {}}}),
            "removed_property",
            "/properties/lines/items/properties/sku",
        ),
        (
            _with(
                p_customer={
                    "type": "object",
                    "properties": {"email": {"type": "string"}},
                    "required": ["email"],
                }
            ),
            "new_required_property",
            "/properties/customer/required",
        ),
        (
            _with(
                p_customer={
                    "type": "object",
                    "properties": {
                        "email": {"format": "email", "type": "string", "enum": ["a@b.c"]}
                    },
                }
            ),
            "enum_narrowed",
            "/properties/customer/properties/email/enum",
        ),
    ],
)
def test_each_breaking_change_is_found_where_it_is(new: Any, kind: str, pointer: str) -> None:
    changes = breaking_changes(BASE, new)
    assert [(c.kind, c.pointer) for c in changes] == [(kind, pointer)]


@pytest.mark.parametrize(
    "new",
    [
        BASE,
        _with(p_note={"type": "string"}),  # a new optional property
        _with(required=[]),  # fewer requirements
        _with(p_total={"type": ["number", "null"]}),  # wider type
        _with(p_total={}),  # any type
        _with(p_status={"enum": ["new", "paid", "shipped", "cancelled"]}),  # more values
        _with(p_id={"type": "string", "description": "the order id"}),  # docs only
    ],
)
def test_compatible_changes_pass(new: Any) -> None:
    assert breaking_changes(BASE, new) == []


def test_integer_to_number_widens_and_hostile_depth_is_bounded() -> None:
    assert breaking_changes({"type": "integer"}, {"type": "number"}) == []
    deep_old: Any = {"type": "object"}
    deep_new: Any = {"type": "object"}
    for _ in range(500):
        deep_old = {"type": "object", "properties": {"a": deep_old}}
        deep_new = {"type": "object", "properties": {"a": deep_new}}
    assert breaking_changes(deep_old, deep_new) == []
