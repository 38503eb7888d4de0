"""A JSON parser that enforces the body limit before parsing and parses with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body is too large."
    default_code = "payload_too_large"


class LimitedJSONParser(JSONParser):
    """Read at most WEBHOOKS_MAX_PAYLOAD_BYTES (also for chunked bodies) and parse strictly."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.WEBHOOKS_MAX_PAYLOAD_BYTES
        if stream is None:
            raise exceptions.ParseError("Request body is empty; send a JSON document.")
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes.")
        if not raw:
            raise exceptions.ParseError("Request body is empty; send a JSON document.")
        try:
            document = orjson.loads(raw)  # strict UTF-8; its own nesting limit is 1024
        except orjson.JSONDecodeError as exc:
            raise exceptions.ParseError(f"Malformed JSON: {exc}") from exc
        depth_limit = settings.WEBHOOKS_MAX_JSON_DEPTH
        if json_depth(document, depth_limit) > depth_limit:
            raise exceptions.ParseError(f"JSON is nested deeper than {depth_limit} levels.")
        if b"\\u0000" in raw and _has_nul(document):  # cheap test first; exact one if needed
            raise exceptions.ParseError(
                "JSON text may not contain NUL (\\u0000): PostgreSQL cannot store it."
            )
        return document


def _has_nul(document: Any) -> bool:
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def json_depth(document: Any, stop_after: int) -> int:
    """Nesting depth of arrays and objects (a scalar is 0), counted without recursion; stops
    counting once past `stop_after`."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(document, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > stop_after:
                return deepest
        pending.extend((child, depth) for child in value if isinstance(child, dict | list))
    return deepest
