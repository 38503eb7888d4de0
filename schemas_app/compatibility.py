"""Breaking changes between two versions of an event type's JSON Schema. Pure; no ORM.

A change is breaking when events or payloads that were fine under the old version stop being
so under the new one: a new required property, a removed property, a narrowed type or enum,
`additionalProperties` (or `unevaluatedProperties`) turned off. The check walks `properties`,
`items` and `prefixItems` recursively; each change names where it is by a JSON pointer into the
new schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Change:
    pointer: str  # into the schema, e.g. /properties/total
    kind: str  # new_required_property, removed_property, type_narrowed, enum_narrowed,
    # additional_properties_disallowed
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "kind": self.kind, "detail": self.detail}


_MAX_DEPTH = 64


def breaking_changes(old: Any, new: Any) -> list[Change]:
    """Every breaking change from `old` to `new`, in document order."""
    changes: list[Change] = []
    _compare(old, new, "", changes, 0)
    return changes


def _token(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _types(schema: dict[str, Any]) -> set[str] | None:
    value = schema.get("type")
    if value is None:
        return None  # any type
    return {value} if isinstance(value, str) else {str(v) for v in value}


def _enum(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    value = schema.get("enum")
    return list(value) if isinstance(value, list) else None


def _compare(old: Any, new: Any, at: str, changes: list[Change], depth: int) -> None:
    if not isinstance(old, dict) or not isinstance(new, dict) or depth > _MAX_DEPTH:
        if old is not False and new is False:
            changes.append(Change(at or "/", "type_narrowed", "the schema now accepts nothing"))
        return
    old_types, new_types = _types(old), _types(new)
    if new_types is not None:
        lost = (
            {"any type"}
            if old_types is None
            else {
                t
                for t in old_types
                if t not in new_types and not (t == "integer" and "number" in new_types)
            }
        )
        if lost:
            changes.append(
                Change(
                    at + "/type",
                    "type_narrowed",
                    f"no longer accepts {', '.join(sorted(lost))} (now {sorted(new_types)})",
                )
            )
    old_enum, new_enum = _enum(old), _enum(new)
    if new_enum is not None:
        if old_enum is None:
            changes.append(Change(at + "/enum", "enum_narrowed", "values are now restricted"))
        else:
            removed = [v for v in old_enum if v not in new_enum]
            if removed:
                changes.append(
                    Change(at + "/enum", "enum_narrowed", f"no longer accepts {removed!r}")
                )
    old_required = set(old.get("required") or [])
    for name in new.get("required") or []:
        if name not in old_required:
            changes.append(
                Change(
                    f"{at}/required",
                    "new_required_property",
                    f"{name!r} is now required",
                )
            )
    old_props = old.get("properties") or {}
    new_props = new.get("properties") or {}
    if isinstance(old_props, dict) and isinstance(new_props, dict):
        for name, sub in old_props.items():
            where = f"{at}/properties/{_token(name)}"
            if name not in new_props:
                changes.append(Change(where, "removed_property", f"{name!r} was removed"))
            else:
                _compare(sub, new_props[name], where, changes, depth + 1)
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        if new.get(keyword) is False and old.get(keyword) is not False:
            changes.append(
                Change(
                    f"{at}/{keyword}",
                    "additional_properties_disallowed",
                    "properties not listed are now refused",
                )
            )
    if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
        _compare(old["items"], new["items"], f"{at}/items", changes, depth + 1)
    old_prefix, new_prefix = old.get("prefixItems"), new.get("prefixItems")
    if isinstance(old_prefix, list) and isinstance(new_prefix, list):
        for index, (a, b) in enumerate(zip(old_prefix, new_prefix, strict=False)):
            _compare(a, b, f"{at}/prefixItems/{index}", changes, depth + 1)
