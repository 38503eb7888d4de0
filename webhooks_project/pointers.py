"""JSON pointers (RFC 6901), for error entries. Pure: imported by the parser and the error
handler, which cannot import each other (the handler imports DRF's views, which load the parser)."""

from __future__ import annotations


def escape_pointer_token(token: object) -> str:
    """Escape one JSON pointer reference token (RFC 6901)."""
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(*tokens: object) -> str:
    """Build a JSON pointer from path tokens: pointer("data", 0, "id") == "/data/0/id"."""
    return "".join("/" + escape_pointer_token(t) for t in tokens)
