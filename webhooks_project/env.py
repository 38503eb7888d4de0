"""Typed readers for environment variables, and the parsing settings.py needs (so that settings
import no app code)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from typing import Any, overload

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@overload
def env_str(name: str, default: str) -> str: ...
@overload
def env_str(name: str, default: None = None) -> str | None: ...


def env_str(name: str, default: str | None = None) -> str | None:
    """Return the variable's value, or `default` when it is unset."""
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    """Parse a boolean variable; anything but a clear yes/no is a configuration error."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def _env_number(name: str, default: float, minimum: float, cast: type, kind: str) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = cast(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be {kind}, got {raw!r}") from exc
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    """Parse an integer variable that must be at least `minimum`."""
    return int(_env_number(name, default, minimum, int, "an integer"))


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    """Parse a float variable that must be at least `minimum`."""
    return float(_env_number(name, default, minimum, float, "a number"))


def env_int_list(name: str, default: list[int]) -> list[int]:
    """Parse a comma-separated list of non-negative integers (e.g. a retry schedule)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    try:
        values = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"{name} must be comma-separated whole seconds, got {raw!r}"
        ) from exc
    if any(v < 0 for v in values):
        raise ImproperlyConfigured(f"{name} must not contain negative delays, got {raw!r}")
    return values


def env_list(name: str, default: list[str]) -> list[str]:
    """Parse a comma-separated list of strings."""
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [part.strip() for part in raw.split(",") if part.strip()]


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^(\d+)/(\d*)(s|sec|second|m|min|minute|h|hour|d|day)$")


def parse_rate(rate: str) -> tuple[int, int] | None:
    """'100/s', '6000/min', '10/2h' -> (requests, window seconds); '' or 'off' -> None."""
    text = rate.strip().lower()
    if text in ("", "off", "none"):
        return None
    match = _RATE.match(text)
    if match is None:
        raise ValueError(f"bad rate {rate!r}; use e.g. 100/s, 6000/min, 100000/h or off")
    count, multiple, unit = match.groups()
    return int(count), int(multiple or 1) * _UNITS[unit[0]]


def parse_cidrs(
    values: Sequence[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Networks from strings like '10.1.0.0/16'; raises ValueError naming a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a network in CIDR notation") from exc
    return tuple(networks)


def dev_key(seed: str) -> str:
    """A Fernet key derived from `seed` (the dev SECRET_KEY): only for WEBHOOKS_ENV=dev."""
    import base64
    import hashlib

    return base64.urlsafe_b64encode(
        hashlib.sha256(b"webhooks-dev-fernet:" + seed.encode()).digest()
    ).decode()
