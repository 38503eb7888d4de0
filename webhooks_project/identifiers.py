"""Public object identifiers: a type prefix and a time-ordered, random base62 body (evt_2Zx...)."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LENGTH = 22  # 48 bits of milliseconds + 80 random bits fit in 22 base62 digits


def _base62(number: int, length: int) -> str:
    digits = []
    for _ in range(length):
        number, rem = divmod(number, 62)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits))


def new_id(prefix: str, millis: int | None = None) -> str:
    """Return `prefix_` + 22 base62 characters; later ids sort after earlier ones (per ms).
    `millis` makes an id of another moment (a backfill, a test)."""
    if millis is None:
        millis = time.time_ns() // 1_000_000
    value = (millis << 80) | secrets.randbits(80)
    return f"{prefix}_{_base62(value, _BODY_LENGTH)}"


def id_floor(prefix: str, millis: int) -> str:
    """The smallest id `new_id(prefix)` can make at `millis`: ids made at or after that
    millisecond sort at or after it (byte order, i.e. the "C" collation)."""
    return f"{prefix}_{_base62(millis << 80, _BODY_LENGTH)}"


def id_millis(value: str) -> int | None:
    """The millisecond a `new_id` was made at, or None for a string `new_id` did not make."""
    _, _, body = value.rpartition("_")
    if len(body) != _BODY_LENGTH:
        return None
    number = 0
    for char in body:
        digit = _ALPHABET.find(char)
        if digit < 0:
            return None
        number = number * 62 + digit
    return number >> 80
