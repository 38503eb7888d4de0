"""Strict JSON Schema (Draft 2020-12) checking with compiled validators, reported as JSON pointers.

Pure: no ORM. Callers pass a cache key that names one immutable schema (type name + version row id).

What a schema may do is bounded, because schemas come from API clients:
- `$ref` resolves only inside the schema document itself (`#/$defs/...`, anchors, embedded
  `$id`s) and the Draft 2020-12 meta-schemas: nothing is ever fetched from the network or read
  from disk (the registry's retrieve function refuses). A `$ref` that does not resolve, and a
  cycle of references that never descends into the instance, are refused when the schema is
  checked, with the pointer of the offending `$ref`.
- `pattern` and `patternProperties` run on RE2 (linear time, no backtracking); a pattern RE2
  cannot compile (backreferences, lookaround) is refused when the schema is checked.
- `uniqueItems` is checked in O(n) through a canonical form, not by comparing every pair.
- Validating one instance has a budget of keyword evaluations (`DEFAULT_BUDGET`); past it the
  instance is refused with the keyword `budget`, whatever the schema does (nested `anyOf`s over
  recursive references can be made exponential).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import re2
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.exceptions import ValidationError as JsonSchemaError
from jsonschema.validators import extend
from jsonschema_specifications import REGISTRY as SPECIFICATIONS
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT202012

MAX_ERRORS = 20
_CACHE_SIZE = 512
# Keyword evaluations allowed for one instance: a fixed allowance plus a share per JSON value in
# it. A schema evaluates each value a bounded number of times (the keywords that apply there), so
# a real event stays far below; a schema built to explode (nested anyOf over a recursive $ref is
# exponential in the depth) reaches it at once. The wall-clock cap is the backstop.
BUDGET_BASE = 10_000
BUDGET_PER_VALUE = 200
DEFAULT_MAX_SECONDS = 2.0
_CLOCK_EVERY = 1024  # keyword evaluations between two looks at the clock
MAX_DETAIL = 300  # characters of a violation's message (messages quote the instance)
_BASE_URI = "urn:webhooks:schema"
_META_PREFIX = "https://json-schema.org/"  # the shipped meta-schemas: resolved, not walked

# In-place applicators: they apply their subschemas to the same instance, so a reference cycle
# through them alone never ends. Every other subschema keyword descends into the instance.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")
_DESCENDING_ONE = (
    "additionalProperties",
    "unevaluatedProperties",
    "items",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "contentSchema",
    "additionalItems",
)
_DESCENDING_MANY = ("prefixItems",)
_DESCENDING_MAP = ("properties", "patternProperties")
_DEFS = ("$defs", "definitions")


@dataclass(frozen=True)
class SchemaViolation:
    """One reason an instance does not match a schema."""

    pointer: str
    keyword: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "keyword": self.keyword, "detail": self.detail}


class InvalidSchema(ValueError):
    """The document is not a schema this service accepts; `pointer` is where, in the schema."""

    def __init__(self, message: str, pointer: str = "") -> None:
        super().__init__(f"{message} (at {pointer or '/'} in the schema)")
        self.message = message
        self.pointer = pointer


def _pointer(path: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


# --- regular expressions on RE2 --------------------------------------------------------------

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_patterns: dict[str, Any] = {}
_patterns_lock = threading.Lock()


def _regex(pattern: str) -> Any:
    """The compiled RE2 form of `pattern` (cached); raises re2.error if RE2 cannot take it."""
    compiled = _patterns.get(pattern)
    if compiled is None:
        compiled = re2.compile(pattern, _RE2_OPTIONS)
        with _patterns_lock:
            if len(_patterns) > 4096:
                _patterns.clear()
            _patterns[pattern] = compiled
    return compiled


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[JsonSchemaError]:
    if validator.is_type(instance, "string") and not _regex(patrn).search(instance):
        yield JsonSchemaError(f"the string does not match {patrn!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[JsonSchemaError]:
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in patterns.items():
        compiled = _regex(patrn)
        for k, v in instance.items():
            if compiled.search(k):
                yield from validator.descend(v, subschema, path=k, schema_path=patrn)


# --- uniqueItems in linear time --------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """A hashable form equal for JSON-equal values: 1 == 1.0, but true != 1, key order ignored."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", value)  # Python's hash and == already make 1 and 1.0 one key
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("other", repr(value))


def _unique_items(validator: Any, unique: bool, instance: Any, schema: Any) -> Iterator[Any]:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield JsonSchemaError(f"{instance!r} has non-unique elements")
            return
        seen.add(key)


# --- the evaluation budget -------------------------------------------------------------------


class BudgetExceeded(Exception):
    """Validating one instance took more keyword evaluations, or more time, than allowed."""


class _Budget:
    __slots__ = ("deadline", "left", "until_clock")

    def __init__(self, steps: int, seconds: float) -> None:
        self.left = steps
        self.deadline = time.monotonic() + seconds
        self.until_clock = _CLOCK_EVERY

    def charge(self) -> None:
        self.left -= 1
        self.until_clock -= 1
        if self.left < 0:
            raise BudgetExceeded
        if not self.until_clock:
            self.until_clock = _CLOCK_EVERY
            if time.monotonic() > self.deadline:
                raise BudgetExceeded


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "validation_budget", default=None
)


def _charged(keyword_fn: Callable[..., Any]) -> Callable[..., Any]:
    def charged(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        budget = _budget.get()
        if budget is not None:
            budget.charge()
        return keyword_fn(validator, value, instance, schema) or ()

    return charged


def count_values(instance: Any) -> int:
    """How many JSON values `instance` holds, containers included (iterative)."""
    count, stack = 0, [instance]
    while stack:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def _refuse(uri: str) -> Any:
    """The registry's retrieve function: a `$ref` outside the document is never fetched."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs field the stub omits


_keywords = dict(Draft202012Validator.VALIDATORS)
_keywords.update(
    {"pattern": _pattern, "patternProperties": _pattern_properties, "uniqueItems": _unique_items}
)
StrictValidator = extend(
    Draft202012Validator, {name: _charged(fn) for name, fn in _keywords.items()}
)
# The meta-schemas are shipped with jsonschema (jsonschema-specifications), not fetched.
# (attrs takes the private field `_retrieve` as `retrieve`; mypy sees only the field's name)
_REGISTRY: Registry[Any] = Registry(retrieve=_refuse).with_resources(  # type: ignore[call-arg]
    SPECIFICATIONS.items()
)


def _with_base(schema: Any) -> Any:
    """`schema` with a base URI of our own unless it has one: relative references resolve
    against it, never against a file."""
    if isinstance(schema, dict) and "$id" not in schema:
        return {"$id": _BASE_URI, **schema}
    return schema


def _compile(schema: Any) -> Any:
    schema = _with_base(schema)
    return StrictValidator(
        schema, registry=_REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


# --- checking a schema before it is stored ---------------------------------------------------


def _subschemas(node: dict[str, Any], path: str) -> Iterator[tuple[str, Any, bool]]:
    """(pointer, subschema, in_place) for every subschema directly under `node`."""
    for key in _IN_PLACE_ONE:
        if key in node:
            yield f"{path}/{key}", node[key], True
    for key in _IN_PLACE_MANY:
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                yield f"{path}/{key}/{i}", sub, True
    if isinstance(node.get("dependentSchemas"), dict):
        for name, sub in node["dependentSchemas"].items():
            yield f"{path}/dependentSchemas{_pointer([name])}", sub, True
    for key in _DESCENDING_ONE:
        if key in node:
            yield f"{path}/{key}", node[key], False
    for key in _DESCENDING_MANY:
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                yield f"{path}/{key}/{i}", sub, False
    for key in (*_DESCENDING_MAP, *_DEFS):
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                yield f"{path}/{key}{_pointer([name])}", sub, False


def _check_references_and_patterns(schema: dict[str, Any]) -> None:
    """Refuse a `$ref` that does not resolve inside the document, a reference cycle that never
    descends into the instance, and a pattern RE2 cannot compile; each with its pointer."""
    root = _with_base(schema)
    resource = Resource.from_contents(root, default_specification=DRAFT202012)
    registry = _REGISTRY.with_resource(root["$id"], resource)
    # in-place edges between subschemas, by object identity: a cycle among them never ends
    edges: dict[int, list[tuple[int, str]]] = {}
    seen: set[int] = set()
    stack: list[tuple[Any, Any, str]] = [(root, registry.resolver(root["$id"]), "")]
    # reference targets are walked after the whole document, so that a problem inside a
    # subschema is reported at its own place, not at the path of a $ref that leads to it
    targets: list[tuple[Any, Any, str]] = []
    while stack or targets:
        if not stack:
            stack.append(targets.pop())
        node, resolver, path = stack.pop()
        if not isinstance(node, dict) or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.get("$id"), str) and path:
            resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
        out = edges.setdefault(id(node), [])
        for keyword in ("$ref", "$dynamicRef"):
            ref = node.get(keyword)
            if ref is None:
                continue
            where = f"{path}/{keyword}"
            if not isinstance(ref, str):
                raise InvalidSchema(f"{keyword} must be a string", where)
            try:
                resolved = resolver.lookup(ref)
            except Unresolvable as exc:
                raise InvalidSchema(
                    f"{keyword} {ref!r} does not resolve inside this schema: references may "
                    "point only into the schema itself (#/$defs/...), never to a file or a URL",
                    where,
                ) from exc
            if isinstance(resolved.contents, dict) and not ref.startswith(_META_PREFIX):
                out.append((id(resolved.contents), where))
                targets.append((resolved.contents, resolved.resolver, where))
        for pattern_at, pattern in _patterns_in(node, path):
            try:
                _regex(pattern)
            except re2.error as exc:
                raise InvalidSchema(
                    f"pattern {pattern!r} is not supported: patterns run on RE2, which has no "
                    f"backreferences or lookaround ({exc})",
                    pattern_at,
                ) from exc
        for sub_path, sub, in_place in _subschemas(node, path):
            if isinstance(sub, dict):
                if in_place:
                    out.append((id(sub), sub_path))
                stack.append((sub, resolver, sub_path))
    _refuse_cycles(edges)


def _patterns_in(node: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node.get("pattern"), str):
        yield f"{path}/pattern", node["pattern"]
    if isinstance(node.get("patternProperties"), dict):
        for key in node["patternProperties"]:
            yield f"{path}/patternProperties{_pointer([key])}", key


def _refuse_cycles(edges: dict[int, list[tuple[int, str]]]) -> None:
    """Depth-first search for a cycle among in-place edges (iterative: schemas can be deep)."""
    state: dict[int, int] = {}  # 1 on the current path, 2 done
    for start in edges:
        if state.get(start):
            continue
        state[start] = 1
        stack = [(start, iter(edges.get(start, ())))]
        while stack:
            node, children = stack[-1]
            for child, where in children:
                if state.get(child) == 1:
                    raise InvalidSchema(
                        "this reference makes a cycle that never descends into the instance, "
                        "so validation would never end",
                        where,
                    )
                if not state.get(child):
                    state[child] = 1
                    stack.append((child, iter(edges.get(child, ()))))
                    break
            else:
                state[node] = 2
                stack.pop()


def check_schema(schema: Any) -> None:
    """Raise InvalidSchema with a readable message and a pointer unless `schema` is a valid
    Draft 2020-12 JSON Schema that this service can evaluate safely (see the module's doc)."""
    if not isinstance(schema, dict | bool):
        raise InvalidSchema("A JSON Schema must be an object (or a boolean).")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidSchema(exc.message, _pointer(exc.path)) from exc
    except RecursionError as exc:
        raise InvalidSchema("the schema is nested too deeply") from exc
    if isinstance(schema, dict):
        _check_references_and_patterns(schema)


def _shorter(message: str) -> str:
    return message if len(message) <= MAX_DETAIL else message[: MAX_DETAIL - 1] + "…"


class _ValidatorCache:
    """A small thread-safe LRU of compiled validators keyed by (name, schema version id)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int], schema: Any) -> Any:
        with self._lock:
            validator = self._items.get(key)
            if validator is not None:
                self._items.move_to_end(key)
                return validator
        validator = _compile(schema)
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
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> list[SchemaViolation]:
    """Return every violation of `schema` by `instance` (at most `limit`), in document order.

    `cache_key` names one immutable schema: versions are never edited, so a new version is a new
    key, and no process can use a stale validator. Never raises for what the schema or the
    instance holds: a schema stored before the rules above that cannot be evaluated, or an
    evaluation past its budget (see BUDGET_BASE), is one violation at the root.
    """
    steps = BUDGET_BASE + BUDGET_PER_VALUE * count_values(instance)
    token = _budget.set(_Budget(steps, max_seconds))
    try:
        validator = validators.get(cache_key, schema) if use_cache else _compile(schema)
        errors = sorted(
            validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]
        )
    except BudgetExceeded:
        return [
            SchemaViolation(
                pointer="",
                keyword="budget",
                detail=f"validating this document took more than {steps} steps or "
                f"{max_seconds:g} s; it is refused rather than left to run",
            )
        ]
    except (Unresolvable, RecursionError, re2.error, SchemaError) as exc:
        return [
            SchemaViolation(
                pointer="",
                keyword="schema",
                detail=f"the schema cannot be evaluated ({type(exc).__name__}); fix the schema",
            )
        ]
    finally:
        _budget.reset(token)
    violations: list[SchemaViolation] = []
    for error in errors:
        violations.append(
            SchemaViolation(
                pointer=_pointer(error.absolute_path),
                keyword=str(error.validator),
                detail=_shorter(error.message),
            )
        )
        if len(violations) >= limit:
            break
    return violations
