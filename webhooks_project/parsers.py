"""A JSON parser that enforces the body limit before parsing and parses with orjson, strictly.

Beyond what orjson refuses (malformed JSON, NaN and Infinity literals, invalid UTF-8), a document
is refused with 422 and the pointer of the value when it would not be kept exactly as sent:
- a number that does not survive the round trip: an integer outside the 64-bit range (signed
  or unsigned), a decimal with more precision than a double keeps, an overflow to infinity;
- an object with the same key twice (JSON parsers disagree on which one wins).
The fast path costs two C-speed scans of the body; only a body that looks suspect is parsed a
second time, with the standard library, to find the offending value.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser

from webhooks_project.pointers import pointer

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
# a number with 16 or more digits, or an exponent: only those can be changed by a double
_SUSPECT_NUMBER = re.compile(rb"[0-9][0-9.]{15,}|[0-9][eE]")
_INT_RANGE = (-(2**63), 2**64 - 1)


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
        outside_strings = _STRINGS.sub(b'""', raw)
        if outside_strings.count(b":") != _members(document) or _SUSPECT_NUMBER.search(
            outside_strings
        ):
            problem = inexact_value(raw)
            if problem is not None:
                # imported here: errors imports DRF's views, which import this module
                from webhooks_project.errors import UnprocessableEntity

                raise UnprocessableEntity([problem])
        return document


def _members(document: Any) -> int:
    """How many object members `document` holds (a duplicate key is one member fewer)."""
    count, pending = 0, [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            count += len(value)
            pending.extend(v for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            pending.extend(v for v in value if isinstance(v, dict | list))
    return count


class _Object(dict[str, Any]):
    duplicate: str | None = None


def _pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    for key, value in pairs:
        if key in obj and obj.duplicate is None:
            obj.duplicate = key
        obj[key] = value
    return obj


def inexact_value(raw: bytes) -> dict[str, str] | None:
    """The first value of the JSON text `raw` that would not be kept exactly as sent, as an API
    error entry with its pointer; None if every number and key is kept."""
    document = json.loads(raw, parse_float=Decimal, object_pairs_hook=_pairs)
    pending: list[tuple[Any, tuple[Any, ...]]] = [(document, ())]
    while pending:
        value, path = pending.pop(0)
        if isinstance(value, _Object):
            if value.duplicate is not None:
                return {
                    "pointer": pointer(*path, value.duplicate),
                    "detail": f"The key {value.duplicate!r} appears more than once in this "
                    "object; send each key once.",
                    "keyword": "duplicate_key",
                }
            pending.extend((v, (*path, k)) for k, v in value.items())
        elif isinstance(value, list):
            pending.extend((v, (*path, i)) for i, v in enumerate(value))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            return _number_problem(path, "is outside the 64-bit integer range")
        elif isinstance(value, Decimal):
            as_float = float(value)
            if as_float in (float("inf"), float("-inf")) or Decimal(repr(as_float)) != value:
                return _number_problem(path, "has more precision than a double keeps")
    return None


def _number_problem(path: tuple[Any, ...], why: str) -> dict[str, str]:
    return {
        "pointer": pointer(*path),
        "detail": f"This number {why}, so it would not be kept exactly as sent; send it as a "
        "string.",
        "keyword": "number",
    }


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
