"""Serializers that refuse fields they do not know, so a client never believes it set something
the service ignored (a misspelt or not-yet-supported field is a 400 naming it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import QueryDict
from rest_framework import serializers

UNKNOWN = "Unknown field: this resource has no such field."
NOT_TEXT = "Not a string: send this value as a JSON string."
NOT_NUMBER = "Not a number: send this value as a JSON number, without quotes."
NOT_BOOLEAN = "Not a boolean: send true or false, without quotes."


def unknown_fields(data: Any, known: Any) -> dict[str, list[str]]:
    """{key: [message]} for each key of the body `data` that is not in `known`."""
    if not isinstance(data, Mapping) or isinstance(data, QueryDict):
        return {}
    return {key: [UNKNOWN] for key in data if key not in known}


def refuse_body(data: Any) -> None:
    """For actions that take no body: anything sent is refused, not ignored."""
    if isinstance(data, Mapping) and not isinstance(data, QueryDict):
        if data:
            raise serializers.ValidationError(unknown_fields(data, ()))
    elif data not in (None, b"", ""):
        raise serializers.ValidationError({"non_field_errors": ["This action takes no body."]})


def _mistyped(field: serializers.Field, value: Any) -> Any:
    """The errors of `value` where DRF would convert it to the field's type instead of refusing
    it: a number or boolean for text (a JSON `5` becoming "5"), a string for a number ("600"
    becoming 600), anything but true or false for a boolean ("yes", 1); and any such item of a
    list or dict. None when it is fine."""
    if value is None:
        return None
    if isinstance(field, serializers.CharField):
        return None if isinstance(value, str) else [NOT_TEXT]
    # the other way round: "600" for a number, "true" or 1 for a boolean (DRF converts them)
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else [NOT_BOOLEAN]
    if isinstance(field, serializers.IntegerField | serializers.FloatField):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return None if number else [NOT_NUMBER]
    child = getattr(field, "child", None)
    if isinstance(field, serializers.ListField) and isinstance(value, list) and child:
        items = {i: e for i, item in enumerate(value) if (e := _mistyped(child, item))}
        return items or None
    if isinstance(field, serializers.DictField) and isinstance(value, Mapping) and child:
        entries = {k: e for k, item in value.items() if (e := _mistyped(child, item))}
        return entries or None
    return None


class StrictFields:
    """Mix into a DRF serializer used for input: keys of the body that are not fields of the
    serializer are refused, each with its pointer, and so are values of another JSON type than
    the field's that DRF would convert (`5` for text, "600" for a number, "true" for a
    boolean: `_mistyped`). Read-only fields are fields: a body read
    from the API and sent back is accepted (they are ignored, as DRF does). Query strings are
    not checked (pagination and format parameters live there)."""

    def to_internal_value(self, data: Any) -> Any:
        fields = self.fields  # type: ignore[attr-defined]  # the serializer's
        unknown = unknown_fields(data, fields)
        if unknown:
            raise serializers.ValidationError(unknown)
        if isinstance(data, Mapping) and not isinstance(data, QueryDict):
            mistyped = {
                name: errors
                for name, field in fields.items()
                if name in data and not field.read_only and (errors := _mistyped(field, data[name]))
            }
            if mistyped:
                raise serializers.ValidationError(mistyped)
        return super().to_internal_value(data)  # type: ignore[misc]  # the serializer's
