"""Refuse webhook targets that would point the sender at our own network. Pure; no ORM.

Checked at registration and again before every send. `allow_private` (the
WEBHOOKS_ALLOW_PRIVATE_TARGETS setting) opens loopback and private ranges for development and tests.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

ALLOWED_SCHEMES = frozenset({"http", "https"})


class BlockedTarget(ValueError):
    """The URL may not be delivered to; the message says why."""


def _address_is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def resolve(host: str, port: int) -> list[str]:
    """Return every address `host` resolves to (IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BlockedTarget(f"cannot resolve host {host!r}: {exc.strerror}") from exc
    return sorted({str(info[4][0]) for info in infos})


def check_url(url: str, *, allow_private: bool, resolve_host: bool = True) -> None:
    """Raise BlockedTarget unless `url` is http(s) and every address of its host is public."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BlockedTarget(f"malformed URL: {exc}") from exc
    if parts.scheme not in ALLOWED_SCHEMES:
        raise BlockedTarget(f"scheme {parts.scheme!r} is not allowed; use http or https")
    host = parts.hostname
    if not host:
        raise BlockedTarget("URL has no host")
    if allow_private:
        return
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    elif resolve_host:
        addresses = resolve(host, port or (443 if parts.scheme == "https" else 80))
    else:
        return
    for address in addresses:
        if not _address_is_public(ipaddress.ip_address(address)):
            raise BlockedTarget(f"{host} resolves to non-public address {address}")
