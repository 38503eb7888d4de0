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


def new_id(prefix: str) -> str:
    """Return `prefix_` + 22 base62 characters; later ids sort after earlier ones (per ms)."""
    millis = time.time_ns() // 1_000_000
    value = (millis << 80) | secrets.randbits(80)
    return f"{prefix}_{_base62(value, _BODY_LENGTH)}"
