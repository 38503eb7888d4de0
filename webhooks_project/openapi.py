"""The OpenAPI document says what every operation can answer: our error shape on each status
the API gives for a request it refuses (drf-spectacular documents only the success)."""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "a stable code, e.g. validation_error"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["pointer", "detail"],
                "properties": {
                    "pointer": {"type": "string", "description": "JSON pointer (RFC 6901)"},
                    "detail": {"type": "string"},
                    "keyword": {"type": "string"},
                    "code": {"type": "string"},
                },
            },
        },
    },
}

_ERRORS = {
    "400": "Malformed JSON, a wrong shape, or an unknown field.",
    "401": "No key, or an invalid, revoked or expired one.",
    "403": "The key lacks the scope, or is limited to another application.",
    "404": "No such object (or not this key's application's).",
    "405": "This method is not allowed here.",
    "413": "The body is over WEBHOOKS_MAX_PAYLOAD_BYTES.",
    "415": "The body is not JSON.",
    "422": "Well-formed, but breaks a rule (schema violation, unknown type, ...).",
    "429": "Over the key's rate; Retry-After says when to come back.",
    "503": "The database is unavailable; nothing was stored.",
}


def add_error_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: an `Error` component and the refusals above on
    every operation (the body statuses on those that take a body)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for path in result.get("paths", {}).values():
        for method, operation in path.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, description in _ERRORS.items():
                # queries are checked too (400, 422), but a read has no body to be too large
                if status in ("413", "415") and method in ("get", "head", "delete"):
                    continue
                operation["responses"].setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": reference}},
                    },
                )
    return result
