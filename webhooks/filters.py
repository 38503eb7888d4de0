"""Content filters: a declarative condition over an event's `data` that decides whether an
endpoint gets the event (the operators Convoy's and Outpost's users know).

A filter is a JSON object. Each member is a condition and all must hold:
- `"path": value` -- the value at `path` equals `value` (JSON equality: 1 is not true);
- `"path": {"$op": operand, ...}` -- every operator holds: `$eq`, `$neq`, `$in`, `$nin` (a list),
  `$gt`, `$gte`, `$lt`, `$lte` (a number or a string, compared with values of the same kind),
  `$exist` (true or false);
- `"$and": [filter, ...]`, `"$or": [filter, ...]`, `"$not": filter`.
Paths are dotted (`customer.address.country`); a numeric segment indexes an array
(`items.0.sku`). Arrays match like MongoDB's: a path that passes through an array looks into each
element, and a condition holds when it holds for any value found (`{"tags": "vip"}` matches
`{"tags": ["new", "vip"]}`); `$neq`, `$nin` and `$exist: false` hold when no value found is
equal, inside, or present (so a missing field passes `$neq`). `{}` matches everything.

There is no `$regex`: Python's `re` backtracks, and a pattern from a partner could take a worker
for seconds on one event. Compiled and checked when saved (`compile_filter`), with a pointer to
the offending member; bounded in size and depth. This module is pure (no Django).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_NODES = 100  # conditions and operators in one filter
MAX_DEPTH = 8  # nested $and / $or / $not
MAX_BYTES = 8192  # the filter as JSON text
MAX_PATH_SEGMENTS = 16
MAX_LIST = 100  # elements of an $in / $nin list, members of an $and / $or

COMPARISONS = ("$gt", "$gte", "$lt", "$lte")
OPERATORS = ("$eq", "$neq", "$in", "$nin", *COMPARISONS, "$exist")
LOGICAL = ("$and", "$or", "$not")


class FilterError(ValueError):
    """The filter is not valid; `pointer` is a JSON pointer into it."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(f"{pointer or '/'}: {message}")
        self.pointer = pointer
        self.message = message


@dataclass(frozen=True)
class Miss:
    """Why an event did not match: the clause (a pointer into the filter) and what failed."""

    pointer: str
    reason: str


Matcher = Callable[[Any], Miss | None]
_MISSING: list[Any] = []


def _token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _key(value: Any) -> tuple[str, Any] | None:
    """A hashable stand-in for a scalar under JSON equality (None for arrays and objects)."""
    if isinstance(value, bool):
        return ("bool", value)
    if _is_number(value):
        return ("number", value)  # 1 and 1.0 hash and compare alike
    if value is None or isinstance(value, str):
        return (type(value).__name__, value)
    return None


def _same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (1 == 1.0), but never a boolean for a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def values_at(data: Any, segments: tuple[str, ...]) -> list[Any]:
    """Every value at the path: arrays on the way are looked into, element by element (or
    indexed by a numeric segment); an array at the end is a value, and so is each element."""
    value = data
    for segment in segments:  # the common case first: objects all the way, no array
        if not isinstance(value, dict):
            break
        if segment not in value:
            return _MISSING
        value = value[segment]
    else:
        return [value, *value] if isinstance(value, list) else [value]
    current = [data]
    for segment in segments:
        found: list[Any] = []
        for value in current:
            if isinstance(value, dict):
                if segment in value:
                    found.append(value[segment])
            elif isinstance(value, list):
                if segment.isdigit():
                    index = int(segment)
                    if index < len(value):
                        found.append(value[index])
                else:
                    found.extend(v[segment] for v in value if isinstance(v, dict) and segment in v)
        current = found
        if not current:
            return _MISSING
    out: list[Any] = []
    for value in current:
        out.append(value)
        if isinstance(value, list):
            out.extend(value)
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


class _Compiler:
    def __init__(self) -> None:
        self.nodes = 0

    def count(self, pointer: str) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FilterError(pointer, f"A filter may hold at most {MAX_NODES} conditions.")

    def node(self, spec: Any, pointer: str, depth: int) -> Matcher:
        if not isinstance(spec, dict):
            raise FilterError(pointer, "A filter is a JSON object of conditions.")
        if depth > MAX_DEPTH:
            raise FilterError(pointer, f"Filters nest at most {MAX_DEPTH} levels deep.")
        parts = [self.member(key, value, pointer, depth) for key, value in spec.items()]
        return parts[0] if len(parts) == 1 else _all(parts)

    def member(self, key: str, value: Any, pointer: str, depth: int) -> Matcher:
        here = f"{pointer}/{_token(key)}"
        self.count(here)
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value or len(value) > MAX_LIST:
                raise FilterError(here, f"{key} takes a list of 1 to {MAX_LIST} filters.")
            subs = [self.node(v, f"{here}/{i}", depth + 1) for i, v in enumerate(value)]
            return _all(subs) if key == "$and" else _any(subs, here)
        if key == "$not":
            sub = self.node(value, here, depth + 1)

            def negated(data: Any) -> Miss | None:
                if sub(data) is None:
                    return Miss(here, "the negated filter matched")
                return None

            return negated
        if key.startswith("$"):
            raise FilterError(
                here, f"Unknown operator {key!r} here: use $and, $or, $not, or a field path."
            )
        segments = tuple(key.split("."))
        if not key or any(not s for s in segments) or len(segments) > MAX_PATH_SEGMENTS:
            raise FilterError(
                here,
                f"A path is dotted field names (at most {MAX_PATH_SEGMENTS}), none empty.",
            )
        if isinstance(value, dict) and value and all(k.startswith("$") for k in value):
            checks = [self.operator(op, operand, here) for op, operand in value.items()]
        elif isinstance(value, dict) and any(k.startswith("$") for k in value):
            raise FilterError(
                here, "Give either operators ($eq, $gt, ...) or a plain value, not both."
            )
        else:
            checks = [self.operator("$eq", value, here, implicit=True)]

        def path_holds(data: Any) -> Miss | None:
            found = values_at(data, segments)
            for check in checks:
                miss = check(found)
                if miss is not None:
                    return miss
            return None

        return path_holds

    def operator(
        self, op: str, operand: Any, pointer: str, implicit: bool = False
    ) -> Callable[[list[Any]], Miss | None]:
        here = pointer if implicit else f"{pointer}/{_token(op)}"
        if not implicit:
            self.count(here)
        if op in ("$eq", "$neq"):
            want = op == "$eq"
            key = _key(operand)

            def equal(found: list[Any]) -> Miss | None:
                if key is not None:  # a scalar: compared by its hashable stand-in
                    hit = any(_key(v) == key for v in found)
                else:
                    hit = any(_same(v, operand) for v in found)
                if hit == want:
                    return None
                seen = "missing" if not found else _short(found[0])
                verb = "equal" if want else "not equal"
                return Miss(here, f"expected a value {verb} to {_short(operand)}, found {seen}")

            return equal
        if op in ("$in", "$nin"):
            if not isinstance(operand, list) or len(operand) > MAX_LIST:
                raise FilterError(here, f"{op} takes a list of at most {MAX_LIST} values.")
            want = op == "$in"
            keys = {_key(o) for o in operand}
            scalars = None not in keys  # every operand scalar: a set lookup per value

            def inside(found: list[Any]) -> Miss | None:
                if scalars:
                    hit = any(_key(v) in keys for v in found)
                else:
                    hit = any(_same(v, o) for v in found for o in operand)
                if hit == want:
                    return None
                seen = "missing" if not found else _short(found[0])
                return Miss(here, f"{seen} is {'not ' if want else ''}in {_short(operand)}")

            return inside
        if op in COMPARISONS:
            if not (_is_number(operand) or isinstance(operand, str)):
                raise FilterError(here, f"{op} compares with a number or a string.")
            compare = _COMPARE[op]

            def ordered(found: list[Any]) -> Miss | None:
                for v in found:
                    same_kind = (
                        _is_number(v) and _is_number(operand)
                        if not isinstance(operand, str)
                        else isinstance(v, str)
                    )
                    if same_kind and compare(v, operand):
                        return None
                seen = "missing" if not found else _short(found[0])
                return Miss(here, f"expected {op} {_short(operand)}, found {seen}")

            return ordered
        if op == "$exist":
            if not isinstance(operand, bool):
                raise FilterError(here, "$exist takes true or false.")

            def exists(found: list[Any]) -> Miss | None:
                if bool(found) == operand:
                    return None
                return Miss(here, "the field is missing" if operand else "the field is present")

            return exists
        raise FilterError(
            here, f"Unknown operator {op!r}; known: {', '.join(OPERATORS)} (no $regex)."
        )


_COMPARE: Mapping[str, Callable[[Any, Any], bool]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _all(subs: list[Matcher]) -> Matcher:
    def every(data: Any) -> Miss | None:
        for sub in subs:
            miss = sub(data)
            if miss is not None:
                return miss
        return None

    return every


def _any(subs: list[Matcher], pointer: str) -> Matcher:
    def some(data: Any) -> Miss | None:
        misses = []
        for sub in subs:
            miss = sub(data)
            if miss is None:
                return None
            misses.append(miss)
        reasons = "; ".join(f"{m.pointer}: {m.reason}" for m in misses[:3])
        return Miss(pointer, f"no alternative matched ({reasons})")

    return some


@dataclass(frozen=True)
class Filter:
    """A compiled filter: `explain(data)` is None when the data matches, else the first miss."""

    source: Any
    explain: Matcher

    def matches(self, data: Any) -> bool:
        return self.explain(data) is None


def compile_filter(spec: Any, pointer: str = "") -> Filter:
    """Check and compile a filter (raises FilterError with a pointer under `pointer`)."""
    try:
        size = len(json.dumps(spec, ensure_ascii=False))
    except (TypeError, ValueError) as exc:
        raise FilterError(pointer, "A filter is JSON.") from exc
    if size > MAX_BYTES:
        raise FilterError(pointer, f"A filter is at most {MAX_BYTES} bytes of JSON.")
    return Filter(source=spec, explain=_Compiler().node(spec, pointer, 1))
