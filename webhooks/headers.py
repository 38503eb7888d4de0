"""Rules for an endpoint's custom headers, checked when they are saved (API and admin). Pure.

A header that breaks HTTP would make every delivery to the endpoint fail at send time, long after
the operator saved it, so it is refused at once with its name:
- names are RFC 9110 tokens; values are visible ASCII or Latin-1 (obs-text) and spaces or tabs,
  with no CR, LF, NUL or other control byte, and no leading or trailing white space;
- at most MAX_HEADERS headers, each value at most MAX_VALUE_BYTES, all names and values together
  at most MAX_TOTAL_BYTES (consumers commonly accept about 100 headers and 8 KB; ours take room);
- names the service sets itself (the Standard Webhooks headers, framing and hop-by-hop headers)
  are reserved.
"""

from __future__ import annotations

import re
from typing import Any

MAX_HEADERS = 32
MAX_VALUE_BYTES = 1024
MAX_TOTAL_BYTES = 4096
MASK = "********"  # what reads show instead of a value

RESERVED = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "host",
        "user-agent",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-authorization",
        "proxy-connection",
        "traceparent",  # ours when the endpoint asks for it (trace_propagation)
        "tracestate",
    }
)
RESERVED_PREFIXES = ("webhook-",)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# field-value (RFC 9110 5.5): VCHAR, obs-text (0x80-0xFF), SP and HTAB inside
_VALUE = re.compile(r"[\x21-\x7e\x80-\xff](?:[\x20\x09\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?")


class HeaderRefused(ValueError):
    """One header breaks a rule; `name` is the header as given."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def check_headers(headers: Any) -> dict[str, str]:
    """The headers with lower-cased names, or HeaderRefused naming the first one that breaks a
    rule above (a ValueError for a document that is not an object of strings)."""
    if not isinstance(headers, dict):
        raise HeaderRefused("", "Give an object of header name -> value.")
    if len(headers) > MAX_HEADERS:
        raise HeaderRefused("", f"At most {MAX_HEADERS} headers ({len(headers)} given).")
    clean: dict[str, str] = {}
    total = 0
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise HeaderRefused(str(name), f"Header name {name!r} is not an HTTP token (RFC 9110).")
        lowered = name.lower()
        if lowered in RESERVED or lowered.startswith(RESERVED_PREFIXES):
            raise HeaderRefused(name, f"Header {name!r} is set by the service.")
        if lowered in clean:
            raise HeaderRefused(name, f"Header {name!r} is given twice (names ignore case).")
        if not isinstance(value, str):
            raise HeaderRefused(name, f"Header {name!r} must have a string value.")
        if value == MASK:
            raise HeaderRefused(
                name,
                f"Header {name!r} has the masked placeholder as its value: reads hide values, "
                "so send the real value (GET .../headers/ shows them) or leave `headers` out.",
            )
        if not _VALUE.fullmatch(value):
            raise HeaderRefused(
                name,
                f"Header {name!r} has an empty value, white space at an end, or a character "
                "that is not visible ASCII or Latin-1 (control bytes, CR and LF are refused).",
            )
        size = len(value.encode("latin-1"))
        if size > MAX_VALUE_BYTES:
            raise HeaderRefused(name, f"Header {name!r} is over {MAX_VALUE_BYTES} bytes.")
        total += len(lowered) + size
        clean[lowered] = value
    if total > MAX_TOTAL_BYTES:
        raise HeaderRefused("", f"Headers total {total} bytes; at most {MAX_TOTAL_BYTES}.")
    return clean


def masked(headers: dict[str, str] | None) -> dict[str, str]:
    """The headers as reads show them: names, never values."""
    return dict.fromkeys(headers or {}, MASK)
