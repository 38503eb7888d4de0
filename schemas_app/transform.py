"""Declarative payload transformation: internal entity state -> the standardized payload. Pure.

A mapping is a JSON document describing the output. Each leaf is either
- a string: a JMESPath expression over the event's `data` (`"order.total_cents"`);
- `{"$literal": value}`: that value as is (a string that is not an expression, or any JSON);
- a number, boolean or null: itself.
Objects map to objects and arrays to arrays, position by position. Nothing executes code.
Expressions are compiled once when the mapping is saved, and a bad one is refused with its
JSON pointer and the parser's message.

Limits keep a hostile mapping or input from costing much: the mapping's size, depth and
expression length are bounded when it is saved, and the output's size when it is applied.
An expression that selects nothing yields null (JMESPath's rule); the output schema, checked
after the transformation, is where a field is made mandatory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jmespath
import orjson
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
        output = _apply(self.tree, data, "")
        size = len(orjson.dumps(output))
        if size > MAX_OUTPUT_BYTES:
            raise TransformError("", f"the output is {size} bytes, over {MAX_OUTPUT_BYTES}")
        return output


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


def _apply(tree: Any, data: Any, at: str) -> Any:
    if isinstance(tree, _Expression):
        try:
            return tree.parsed.search(data)
        except (JMESPathError, RecursionError, TypeError, ValueError) as exc:
            raise TransformError(at, f"{tree.source!r} failed: {exc}") from exc
    if isinstance(tree, tuple):
        return tree[1]
    if isinstance(tree, dict):
        return {key: _apply(value, data, f"{at}/{_token(key)}") for key, value in tree.items()}
    return [_apply(value, data, f"{at}/{i}") for i, value in enumerate(tree)]
