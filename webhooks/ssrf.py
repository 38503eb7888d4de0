"""Refuse webhook targets that would point the sender at our own network. Pure; no ORM.

Checked at registration and again before every send. At send time the host is resolved once,
every address it resolves to must be public (or inside an allowed CIDR), and the request then
goes to the checked address (`Target.address`, see `atransport.Client.post`) with the original
Host header and TLS server name: a name that resolves to something else a moment later (DNS
rebinding) cannot redirect it. `allow_private` (WEBHOOKS_ALLOW_PRIVATE_TARGETS) opens everything for
development and tests; `allowed_cidrs` (WEBHOOKS_ALLOWED_TARGET_CIDRS) opens chosen networks.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

ALLOWED_SCHEMES = frozenset({"http", "https"})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Ranges that carry or translate to an IPv4 address we cannot check as a whole: the deprecated
# IPv4-compatible form (::a.b.c.d, within ::/96) and the rest of ::/8 (IETF reserved), SIIT's
# IPv4-translated ::ffff:0:a.b.c.d, and local-use NAT64 (RFC 8215), whose embedding varies.
_NEVER_PUBLIC_V6 = (
    ipaddress.IPv6Network("::/8"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
)


class BlockedTarget(ValueError):
    """The URL may not be delivered to; the message says why."""


@dataclass(frozen=True)
class Target:
    """A checked URL. `address` is the IP to connect to (None: resolve normally, unchecked)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str | None


def _embedded(address: Address) -> list[Address]:
    """The IPv4 addresses an IPv6 address carries: IPv4-mapped, NAT64, 6to4, Teredo (its
    server and client) and ISATAP (an interface identifier of ::5efe:a.b.c.d)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found: list[Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if (int(address) >> 32) & 0xFDFFFFFF == 0x00005EFE:  # ISATAP, u/l bit either way
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def is_public(address: Address) -> bool:
    """Global unicast: not loopback, private, link-local (169.254/16, the cloud metadata
    address), CGNAT, unspecified, reserved or multicast, directly or embedded in IPv6 in any
    form (see _embedded and _NEVER_PUBLIC_V6)."""
    if isinstance(address, ipaddress.IPv6Address) and (
        address.scope_id or any(address in net for net in _NEVER_PUBLIC_V6)
    ):
        return False
    return all(a.is_global and not a.is_multicast for a in [address, *_embedded(address)])


def legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address of a host written in a legacy IPv4 form that resolvers accept but
    `ipaddress` does not (2130706433, 0x7f.1, 0177.0.0.1, 127.1), else None."""
    if not host or not all(c in "0123456789abcdefxABCDEFX." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def resolve(host: str, port: int) -> list[str]:
    """Return every address `host` resolves to (IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise BlockedTarget(f"cannot resolve host {host!r}: {reason}") from exc
    return sorted({str(info[4][0]).split("%", 1)[0] for info in infos})


def check_url(
    url: str,
    *,
    allow_private: bool,
    allowed_cidrs: Sequence[Network] = (),
    https_only: bool = False,
    resolve_host: bool = True,
) -> Target:
    """The checked target of `url`, or BlockedTarget saying why it may not receive requests.

    With `resolve_host=False` (registration of a name that does not resolve yet is allowed) a
    name is not looked up; it is checked again before every send.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BlockedTarget(f"malformed URL: {exc}") from exc
    if parts.scheme not in ALLOWED_SCHEMES:
        raise BlockedTarget(f"scheme {parts.scheme!r} is not allowed; use http or https")
    if https_only and parts.scheme != "https":
        raise BlockedTarget("only https URLs are allowed (WEBHOOKS_HTTPS_ONLY)")
    host = parts.hostname
    if not host:
        raise BlockedTarget("URL has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    if allow_private:
        return Target(url=url, scheme=parts.scheme, host=host, port=port, address=None)
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = legacy_ipv4(host)
    if literal is not None:
        addresses = [str(literal)]
    elif resolve_host:
        addresses = resolve(host, port)
    else:
        return Target(url=url, scheme=parts.scheme, host=host, port=port, address=None)
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if not is_public(ip) and not any(ip in network for network in allowed_cidrs):
            raise BlockedTarget(f"{host} resolves to non-public address {address}")
    return Target(url=url, scheme=parts.scheme, host=host, port=port, address=addresses[0])
