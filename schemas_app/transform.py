"""Declarative payload transformation: internal entity state -> the standardized payload. Pure.

A mapping is a JSON document describing the output. Each leaf is either
- a string: a JMESPath expression over the event's `data` (`"order.total_cents"`);
- `{"$literal": value}`: that value as is (a string that is not an expression, or any JSON);
- a number, boolean or null: itself.
Objects map to objects and arrays to arrays, position by position. Nothing executes code.
Expressions are compiled once when the mapping is saved, and a bad one is refused with its
JSON pointer and the parser's message.

Limits keep a hostile mapping or input from costing much: the mapping's size, depth and
expression length are bounded when it is saved, and the output's size while it is applied:
every intermediate result of every expression is measured as it is built (as the JSON it would
serialize to, shared parts counted each time they appear), so an expression that doubles its
input at each step (`[@,@]|[@,@]|...`) is stopped at the first result over the cap, long before
it could be serialized.
An expression that selects nothing yields null (JMESPath's rule); the output schema, checked
after the transformation, is where a field is made mandatory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jmespath
import orjson
from jmespath import visitor
from jmespath.exceptions import JMESPathError

LITERAL = "$literal"
MAX_EXPRESSION_LENGTH = 1000
MAX_MAPPING_NODES = 1000
MAX_MAPPING_DEPTH = 16
MAX_OUTPUT_BYTES = 1024 * 1024


class TransformError(ValueError):
    """A mapping that cannot be compiled, or cannot be applied to an event; says where."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(f"{pointer or '/'}: {message}")
        self.pointer = pointer or "/"
        self.message = message


@dataclass(frozen=True)
class _Expression:
    source: str
    parsed: Any


@dataclass(frozen=True)
class Mapping:
    """A compiled mapping, ready to apply to many events."""

    tree: Any
    document: Any

    def apply(self, data: Any) -> Any:
        """The output for one event's `data`; raises TransformError naming the failing leaf."""
        sizes = _Sizes()
        output = _apply(self.tree, data, "", sizes)
        size = sizes.of(output)  # before serializing: shared parts would be written out again
        if size > MAX_OUTPUT_BYTES:
            raise TransformError("", f"the output is over {MAX_OUTPUT_BYTES} bytes")
        size = len(orjson.dumps(output))
        if size > MAX_OUTPUT_BYTES:
            raise TransformError("", f"the output is {size} bytes, over {MAX_OUTPUT_BYTES}")
        return output


class _TooLarge(Exception):
    pass


class _Sizes:
    """About how many bytes a value serializes to, with every shared part counted each time it
    appears; memoized by identity (the values are kept, so no identity is reused)."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[Any, int]] = {}

    def of(self, value: Any) -> int:
        if not isinstance(value, dict | list | str):
            return 8
        known = self._known.get(id(value))
        if known is not None:
            return known[1]
        if isinstance(value, str):
            return len(value) + 2
        # iterative post-order: containers can be deep
        stack: list[tuple[Any, bool]] = [(value, False)]
        while stack:
            node, children_done = stack.pop()
            if id(node) in self._known:
                continue
            items = list(node.values()) if isinstance(node, dict) else node
            if not children_done:
                stack.append((node, True))
                stack.extend(
                    (c, False)
                    for c in items
                    if isinstance(c, dict | list) and id(c) not in self._known
                )
                continue
            total = 2 + len(items)
            if isinstance(node, dict):
                total += sum(len(k) + 3 for k in node)
            for child in items:
                total += (
                    self._known[id(child)][1]
                    if isinstance(child, dict | list)
                    else (len(child) + 2 if isinstance(child, str) else 8)
                )
                if total > MAX_OUTPUT_BYTES:
                    break
            self._known[id(node)] = (node, total)
        return self._known[id(value)][1]


class _BoundedInterpreter(visitor.TreeInterpreter):  # type: ignore[misc]  # jmespath: no types
    """JMESPath's interpreter, measuring each result as it is built (see the module's doc)."""

    def __init__(self, sizes: _Sizes) -> None:
        super().__init__()
        self._sizes = sizes

    def visit(self, node: Any, *args: Any, **kwargs: Any) -> Any:
        result = super().visit(node, *args, **kwargs)
        if isinstance(result, dict | list | str) and self._sizes.of(result) > MAX_OUTPUT_BYTES:
            raise _TooLarge
        return result


def _token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def compile_mapping(document: Any) -> Mapping:
    """Compile a mapping document, or raise TransformError for its first problem."""
    count = [0]
    return Mapping(tree=_compile(document, "", 0, count), document=document)


def _compile(node: Any, at: str, depth: int, count: list[int]) -> Any:
    count[0] += 1
    if count[0] > MAX_MAPPING_NODES:
        raise TransformError(at, f"the mapping has more than {MAX_MAPPING_NODES} entries")
    if depth > MAX_MAPPING_DEPTH:
        raise TransformError(at, f"the mapping is nested deeper than {MAX_MAPPING_DEPTH} levels")
    if isinstance(node, str):
        if len(node) > MAX_EXPRESSION_LENGTH:
            raise TransformError(at, f"expression longer than {MAX_EXPRESSION_LENGTH} characters")
        try:
            return _Expression(node, jmespath.compile(node))
        except (JMESPathError, RecursionError) as exc:
            message = (
                " ".join(str(exc).split())
                if not isinstance(exc, RecursionError)
                else ("expression nested too deeply")
            )
            raise TransformError(at, f"invalid expression {node!r}: {message}") from exc
    if isinstance(node, dict):
        if LITERAL in node:
            if len(node) != 1:
                raise TransformError(at, f"{LITERAL!r} must be the only key of its object")
            return ("literal", node[LITERAL])
        return {
            key: _compile(value, f"{at}/{_token(key)}", depth + 1, count)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_compile(value, f"{at}/{i}", depth + 1, count) for i, value in enumerate(node)]
    return ("literal", node)  # numbers, booleans, null


def _apply(tree: Any, data: Any, at: str, sizes: _Sizes) -> Any:
    if isinstance(tree, _Expression):
        try:
            return _BoundedInterpreter(sizes).visit(tree.parsed.parsed, data)
        except _TooLarge:
            raise TransformError(
                at, f"{tree.source!r} builds a value over {MAX_OUTPUT_BYTES} bytes"
            ) from None
        except (JMESPathError, RecursionError, TypeError, ValueError) as exc:
            raise TransformError(at, f"{tree.source!r} failed: {exc}") from exc
    if isinstance(tree, tuple):
        return tree[1]
    if isinstance(tree, dict):
        return {
            key: _apply(value, data, f"{at}/{_token(key)}", sizes) for key, value in tree.items()
        }
    return [_apply(value, data, f"{at}/{i}", sizes) for i, value in enumerate(tree)]
