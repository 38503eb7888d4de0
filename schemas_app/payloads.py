"""From an event's `data` to the payload one endpoint receives. Pure; no ORM.

The order is fixed: (validated at ingestion) -> transform (the endpoint's mapping for this type
if it has one, else the type's) -> check against the type's output schema. A payload that fails
is never sent, in part or in whole: the delivery fails with the reason.

Compiled mappings and output validators are cached per process by their JSON text, so a changed
mapping or schema is simply a new entry; nothing stale can be used.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import orjson

from .transform import Mapping, TransformError, compile_mapping
from .validation import MAX_ERRORS, validate


class PayloadRefused(ValueError):
    """The payload for this endpoint could not be built or fails the output schema."""


@functools.lru_cache(maxsize=1024)
def _mapping(text: str) -> Mapping:
    return compile_mapping(orjson.loads(text))


def shape(
    *,
    event_type: str,
    data: Any,
    type_mapping: str | None,
    endpoint_mapping: str | None,
    output_schema: str | None,
) -> Any:
    """The payload `data` becomes for one endpoint; the mappings and schema come as JSON text
    (as the claim query returns them). Raises PayloadRefused saying why."""
    text = next((t for t in (endpoint_mapping, type_mapping) if t and t != "null"), None)
    payload = data
    if text:
        try:
            payload = _mapping(text).apply(data)
        except TransformError as exc:
            raise PayloadRefused(f"transformation failed at {exc.pointer}: {exc.message}") from exc
    if output_schema and output_schema != "null":
        problems = validate(
            payload,
            orjson.loads(output_schema),
            cache_key=(f"output:{hashlib.sha256(output_schema.encode()).hexdigest()}", 0),
            limit=MAX_ERRORS,
        )
        if problems:
            listed = "; ".join(f"{p.pointer or '/'}: {p.detail}" for p in problems[:5])
            raise PayloadRefused(f"payload fails the output schema: {listed}")
    return payload


def check_mapping(document: Any) -> None:
    """Raise TransformError unless `document` compiles as a mapping."""
    compile_mapping(document)
