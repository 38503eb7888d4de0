"""From an event's `data` to the payload one endpoint receives. Pure; no ORM.

The order is fixed: (validated at ingestion) -> transform (the endpoint's mapping for this type
if it has one, else the type's) -> check against the type's output schema -> mask and encrypt
(the endpoint's rules for this type if it has them, else the type's) -> serialize once -> sign.
A payload that fails any step is never sent, in part or in whole: the delivery fails with the
reason.

Compiled mappings and output validators are cached per process by their JSON text, so a changed
mapping or schema is simply a new entry; nothing stale can be used.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

from . import masking
from .transform import Mapping, TransformError, compile_mapping
from .validation import MAX_ERRORS, validate


def iso(value: datetime | None) -> str | None:
    """A time as the payloads write it: ISO 8601 in UTC with a `Z`."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def build_body(*, event_type: str, occurred_at: datetime, data: Any) -> bytes:
    """Serialize the standard payload once; these exact bytes are signed and sent."""
    return orjson.dumps({"type": event_type, "timestamp": iso(occurred_at), "data": data})


class PayloadRefused(ValueError):
    """The payload for this endpoint could not be built or fails the output schema."""


@functools.lru_cache(maxsize=1024)
def _mapping(text: str) -> Mapping:
    return compile_mapping(orjson.loads(text))


@functools.lru_cache(maxsize=1024)
def _rules(text: str) -> list[masking.Rule]:
    return masking.parse_rules(orjson.loads(text))


@functools.lru_cache(maxsize=256)
def _encrypter(text: str) -> Any:
    return masking.encrypter(orjson.loads(text))


@functools.lru_cache(maxsize=1024)
def _output_schema(text: str) -> tuple[tuple[str, int], Any]:
    """(validator cache key, parsed schema) of an output schema's JSON text."""
    return (f"output:{hashlib.sha256(text.encode()).hexdigest()}", 0), orjson.loads(text)


def _given(*texts: str | None) -> str | None:
    return next((t for t in texts if t and t != "null"), None)


def shape(
    *,
    event_type: str,
    data: Any,
    type_mapping: str | None,
    endpoint_mapping: str | None,
    output_schema: str | None,
    type_masking: str | None = None,
    endpoint_masking: str | None = None,
    encryption_key: str | None = None,
    hash_key: bytes = b"",
) -> Any:
    """The payload `data` becomes for one endpoint; mappings, schema, rules and key come as JSON
    text (as the claim query returns them). Raises PayloadRefused saying why; the reason never
    carries a value from the payload (it is stored with the attempt)."""
    text = _given(endpoint_mapping, type_mapping)
    payload = data
    if text:
        try:
            payload = _mapping(text).apply(data)
        except TransformError as exc:
            raise PayloadRefused(f"transformation failed at {exc.pointer}: {exc.message}") from exc
    schema_text = _given(output_schema)
    if schema_text:
        cache_key, schema = _output_schema(schema_text)
        problems = validate(payload, schema, cache_key=cache_key, limit=MAX_ERRORS)
        if problems:
            # each with what failed: "/ required: 'total' is a required property"
            listed = "; ".join(f"{p.pointer or '/'} {p.keyword}: {p.detail}" for p in problems[:5])
            raise PayloadRefused(f"payload fails the output schema: {listed}")
    rules_text = _given(endpoint_masking, type_masking)
    if rules_text:
        key_text = _given(encryption_key)
        try:
            payload = masking.apply(
                payload,
                _rules(rules_text),
                hash_key=hash_key,
                encrypt=_encrypter(key_text) if key_text else None,
            )
        except masking.MaskingError as exc:
            raise PayloadRefused(f"masking failed at {exc}") from exc
    return payload


def check_mapping(document: Any) -> None:
    """Raise TransformError unless `document` compiles as a mapping."""
    compile_mapping(document)


# --- sensitive input fields, encrypted at rest ----------------------------------------------------

SEALED = "$encrypted"


@functools.lru_cache(maxsize=1024)
def _path_rules(paths: tuple[str, ...]) -> list[masking.Rule]:
    return masking.parse_rules([{"path": p, "action": "encrypt"} for p in paths])


def check_sensitive_fields(paths: Any) -> None:
    """Raise MaskingError unless `paths` is a list of JSON pointers."""
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise masking.MaskingError("/: give a list of JSON pointers like /customer/email")
    _path_rules(tuple(paths))


def seal(data: Any, paths: list[str], encrypt: Any) -> Any:
    """`data` with the value at each path replaced by {"$encrypted": encrypt(its JSON)}."""
    if not paths:
        return data
    return masking.apply(
        data,
        _path_rules(tuple(paths)),
        hash_key=b"",
        encrypt=lambda value: {SEALED: encrypt(orjson.dumps(value).decode())},
    )


STORED_SEALED = "[sealed]"
_MIN_CONTAINED = 4  # a sealed string this long is also found inside longer strings


def _leaves(value: Any) -> list[Any]:
    leaves, pending = [], [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str | int | float) and not isinstance(item, bool):
            leaves.append(item)
    return leaves


def without_sealed(payload: Any, values: list[Any]) -> Any:
    """`payload` for the attempt log: every leaf equal to a sealed value, and every string that
    contains a sealed string (a mapping may have joined it into another), is STORED_SEALED.
    Masked, hashed or encrypted forms of a value do not contain it, and are kept."""
    if not values:
        return payload
    exact = {orjson.dumps(v) for v in values}
    contained = [v for v in values if isinstance(v, str) and len(v) >= _MIN_CONTAINED]

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, bool) or value is None:
            return value
        if orjson.dumps(value) in exact:
            return STORED_SEALED
        if isinstance(value, str) and any(secret in value for secret in contained):
            return STORED_SEALED
        return value

    return clean(payload)


def unseal(data: Any, paths: list[str], decrypt: Any, found: list[Any] | None = None) -> Any:
    """The inverse of `seal`, for sending. With `found`, the strings and numbers inside every
    value it opens are appended to it (what `without_sealed` keeps out of the attempt log)."""
    if not paths:
        return data

    def opened(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {SEALED}:
            clear = orjson.loads(decrypt(value[SEALED]))
            if found is not None:
                found.extend(_leaves(clear))
            return clear
        return value

    return masking.apply(data, _path_rules(tuple(paths)), hash_key=b"", encrypt=opened)
