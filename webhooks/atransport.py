"""POST a signed body to a consumer with aiohttp, on the sender's event loop. Never raises for
network errors: every outcome is a `webhooks.transport.TransportResult`.

- SSRF pinning: with `address` (the SSRF check's resolved IP), the connection goes to that
  address while the URL's host stays the Host header, the TLS server name and the name the
  certificate must match: the session's resolver answers the pinned address for that host and
  nothing else (no DNS cache, no second lookup between the check and the connection).
- Egress proxy (`proxy`, WEBHOOKS_EGRESS_PROXY): every request leaves through that HTTP proxy,
  which is asked for the checked address, never for the name (it cannot resolve it again to
  somewhere else; a target left unchecked, WEBHOOKS_ALLOW_PRIVATE_TARGETS, goes by its name):
  `CONNECT 203.0.113.7:443` for https, then TLS to the URL's host name (SNI and the
  certificate's name); `POST http://203.0.113.7:8080/path` for http. The Host header is the
  URL's.
- Redirects are never followed; answers are not decompressed (no `Accept-Encoding`), and at
  most `max_response_bytes` are read: a bigger answer closes the connection.
- `timeout` is a deadline for the whole request (connect, send, status line, headers, body),
  however the consumer trickles its answer; `connect_timeout` bounds the connection alone.

Failures are classified (`webhooks.transport.ERROR_CLASSES`, `classify`).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from .transport import TransportResult


class PinnedResolver(AbstractResolver):
    """Answers the address the SSRF check pinned for a host; hosts never pinned (a request
    without `address`) are resolved as usual."""

    def __init__(self) -> None:
        self._pins: dict[str, str] = {}
        self._fallback = DefaultResolver()

    def pin(self, host: str, address: str) -> None:
        if len(self._pins) > 100_000:  # bounded: pins are set again before each request
            self._pins.clear()
        self._pins[host] = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self._pins.get(host)
        if address is None:
            return await self._fallback.resolve(host, port, family)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        await self._fallback.close()


class Client:
    """One process's HTTP client: a session with keep-alive connections and the pinning
    resolver. Made, used and closed on one event loop."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, proxy: str | None = None
    ) -> None:
        self.proxy = URL(proxy) if proxy else None
        self.resolver = PinnedResolver()
        connector = aiohttp.TCPConnector(
            ssl=ssl_context if ssl_context is not None else True,  # verified by default
            resolver=self.resolver,
            use_dns_cache=False,  # each request's own pinned address
            limit=0,  # the sender bounds requests at once; the pool keeps what it uses
            enable_cleanup_closed=True,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "Accept", "User-Agent"),
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),  # a consumer's cookies never go to another
        )

    async def close(self) -> None:
        await self.session.close()

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        timeout: float,
        connect_timeout: float,
        max_response_bytes: int,
        address: str | None = None,
    ) -> TransportResult:
        """Send one POST and describe the outcome; network failures are returned, never
        raised (see the module's doc)."""
        started = time.perf_counter()
        options: dict[str, Any] = {}
        target = URL(url)
        try:
            if self.proxy is not None:
                options["proxy"] = self.proxy
            if address is not None and self.proxy is not None:
                # the proxy is asked for the checked address; the name stays the URL's
                host = target.raw_host or ""
                if target.scheme == "https":
                    options["server_hostname"] = host
                headers = {
                    **headers,
                    "Host": host if target.explicit_port is None else f"{host}:{target.port}",
                }
                target = target.with_host(address)
            elif address is not None and target.raw_host:
                # as the connector asks the resolver (IDNA form)
                self.resolver.pin(target.raw_host, address)
            async with asyncio.timeout(timeout):
                async with self.session.post(
                    target,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=min(connect_timeout, timeout)
                    ),
                    **options,
                ) as response:
                    data = await _read_bounded(response.content, max_response_bytes + 1)
                    if len(data) > max_response_bytes:
                        response.close()  # never drain a huge answer
                    return TransportResult(
                        status_code=response.status,
                        duration_ms=(time.perf_counter() - started) * 1000,
                        body=data[:max_response_bytes].decode("utf-8", errors="replace"),
                        headers={k.lower(): v for k, v in response.headers.items()},
                    )
        except aiohttp.ConnectionTimeoutError as exc:
            return _failure(started, "connect_timeout", exc)
        except TimeoutError:
            return TransportResult(
                status_code=None,
                duration_ms=(time.perf_counter() - started) * 1000,
                error=f"no complete answer within the {timeout:g} s deadline",
                error_class="read_timeout",
            )
        except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            return _failure(started, classify(exc), exc)


async def _read_bounded(stream: aiohttp.StreamReader, most: int) -> bytes:
    """Up to `most` bytes of the answer's body (all of it if shorter)."""
    chunks: list[bytes] = []
    left = most
    while left > 0:
        chunk = await stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _errno(exc: BaseException) -> int | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno:
            return current.errno
        nested = getattr(current, "os_error", None)
        current = nested if isinstance(nested, BaseException) else current.__cause__
    return None


def classify(exc: BaseException) -> str:
    """The error class of a failed request (one of `webhooks.transport.ERROR_CLASSES`)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError | socket.gaierror):
        return "dns"
    code = _errno(exc)
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED) or isinstance(
        exc, aiohttp.ClientConnectionResetError
    ):
        return "reset"
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return "tls"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "connection"  # the answer ended early
    if isinstance(exc, aiohttp.ClientResponseError):
        return "protocol"  # an answer HTTP cannot parse
    return "connection"


def _failure(started: float, error_class: str, exc: BaseException) -> TransportResult:
    message: Any = str(exc) or repr(exc)
    return TransportResult(
        status_code=None,
        duration_ms=(time.perf_counter() - started) * 1000,
        error=f"{type(exc).__name__}: {message}"[:500],
        error_class=error_class,
    )
