"""Strict JSON Schema (Draft 2020-12) checking with compiled validators, reported as JSON pointers.

Pure: no ORM. Callers pass a cache key that names one immutable schema (type name + version row id).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

MAX_ERRORS = 20
_CACHE_SIZE = 512


@dataclass(frozen=True)
class SchemaViolation:
    """One reason an instance does not match a schema."""

    pointer: str
    keyword: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "keyword": self.keyword, "detail": self.detail}


class InvalidSchema(ValueError):
    """The document is not a valid Draft 2020-12 JSON Schema."""


def _pointer(path: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def check_schema(schema: Any) -> None:
    """Raise InvalidSchema with a readable message unless `schema` is valid Draft 2020-12."""
    if not isinstance(schema, dict | bool):
        raise InvalidSchema("A JSON Schema must be an object (or a boolean).")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = _pointer(exc.path) or "/"
        raise InvalidSchema(f"{exc.message} (at {where} in the schema)") from exc


class _ValidatorCache:
    """A small thread-safe LRU of compiled validators keyed by (name, schema version id)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int], Draft202012Validator] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int], schema: Any) -> Draft202012Validator:
        with self._lock:
            validator = self._items.get(key)
            if validator is not None:
                self._items.move_to_end(key)
                return validator
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        with self._lock:
            self._items[key] = validator
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return validator

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


validators = _ValidatorCache(_CACHE_SIZE)


def validate(
    instance: Any,
    schema: Any,
    *,
    cache_key: tuple[str, int],
    limit: int = MAX_ERRORS,
    use_cache: bool = True,
) -> list[SchemaViolation]:
    """Return every violation of `schema` by `instance` (at most `limit`), in document order.

    `cache_key` names one immutable schema: versions are never edited, so a new version is a new
    key, and no process can use a stale validator.
    """
    validator = (
        validators.get(cache_key, schema)
        if use_cache
        else Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    )
    violations: list[SchemaViolation] = []
    for error in sorted(
        validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]
    ):
        violations.append(
            SchemaViolation(
                pointer=_pointer(error.absolute_path),
                keyword=str(error.validator),
                detail=error.message,
            )
        )
        if len(violations) >= limit:
            break
    return violations
