"""Serializers that refuse fields they do not know, so a client never believes it set something
the service ignored (a misspelt or not-yet-supported field is a 400 naming it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import QueryDict
from rest_framework import serializers

UNKNOWN = "Unknown field: this resource has no such field."


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


class StrictFields:
    """Mix into a DRF serializer used for input: keys of the body that are not fields of the
    serializer are refused, each with its pointer. Read-only fields are fields: a body read
    from the API and sent back is accepted (they are ignored, as DRF does). Query strings are
    not checked (pagination and format parameters live there)."""

    def to_internal_value(self, data: Any) -> Any:
        unknown = unknown_fields(data, self.fields)  # type: ignore[attr-defined]  # the serializer's
        if unknown:
            raise serializers.ValidationError(unknown)
        return super().to_internal_value(data)  # type: ignore[misc]  # the serializer's
