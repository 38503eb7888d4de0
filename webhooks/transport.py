"""POST a signed body to a consumer with a pooled urllib3 client. Never raises for network errors.

Redirects are never followed, and at most `max_response_bytes` of the answer are read: a huge
response closes the connection instead of being buffered.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from webhooks_project.process_local import ProcessLocal


@dataclass(frozen=True)
class TransportResult:
    """What happened to one HTTP request; `status_code` is None when no response came back."""

    status_code: int | None
    duration_ms: float
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""
    error_class: str = ""  # timeout, connection, tls, protocol

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _threads() -> int:
    from django.conf import settings

    return max(16, getattr(settings, "WEBHOOKS_SEND_THREADS", 16))


def _new_pool() -> urllib3.PoolManager:
    # As many keep-alive connections per host as there are sending threads: with fewer, each
    # extra request opens and discards a connection.
    return urllib3.PoolManager(num_pools=256, maxsize=_threads(), block=False)


_pool = ProcessLocal(_new_pool)  # one per process: prefork children must not share sockets


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    connect_timeout: float,
    max_response_bytes: int,
    address: str | None = None,
) -> TransportResult:
    """Send one POST and describe the outcome; network failures are returned, never raised.

    With `address` (the SSRF check's resolved IP) the connection goes to that address, with the
    URL's host in the Host header and as the TLS server name and certificate name: no second DNS
    lookup happens between the check and the connection.
    """
    started = time.perf_counter()
    try:
        options = {
            "body": body,
            "redirect": False,
            "retries": False,
            "preload_content": False,
            "timeout": urllib3.Timeout(total=timeout, connect=min(connect_timeout, timeout)),
        }
        if address is None:
            response = _pool.get().request("POST", url, headers=headers, **options)
        else:
            parts = urllib3.util.parse_url(url)
            scheme = parts.scheme or "http"
            port = parts.port or (443 if scheme == "https" else 80)
            host = parts.host or ""
            tls = {"server_hostname": host, "assert_hostname": host} if scheme == "https" else {}
            pool = _pool.get().connection_from_host(address, port, scheme, pool_kwargs=tls)
            default_port = port == (443 if scheme == "https" else 80)
            response = pool.urlopen(
                "POST",
                parts.request_uri,
                headers={**headers, "host": host if default_port else f"{parts.netloc}"},
                assert_same_host=False,
                **options,
            )
        complete = False
        try:
            data = response.read(max_response_bytes + 1)
            complete = len(data) <= max_response_bytes
        finally:
            if complete:
                response.release_conn()
            else:
                response.close()  # never drain a huge or broken answer into memory
        return TransportResult(
            status_code=response.status,
            duration_ms=(time.perf_counter() - started) * 1000,
            body=data[:max_response_bytes].decode("utf-8", errors="replace"),
            headers={k.lower(): v for k, v in response.headers.items()},
        )
    except (ConnectTimeoutError, ReadTimeoutError) as exc:
        return _failure(started, "timeout", exc)
    except SSLError as exc:
        return _failure(started, "tls", exc)
    except NewConnectionError as exc:
        return _failure(started, "connection", exc)
    except ProtocolError as exc:
        return _failure(started, "connection", exc)
    except (HTTPError, ssl.SSLError, OSError) as exc:
        return _failure(started, "protocol", exc)


def _failure(started: float, error_class: str, exc: Exception) -> TransportResult:
    message = str(exc)
    if isinstance(exc, ProtocolError) and exc.args:
        message = str(exc.args[-1]) or message
    return TransportResult(
        status_code=None,
        duration_ms=(time.perf_counter() - started) * 1000,
        error=f"{type(exc).__name__}: {message}"[:500],
        error_class=error_class,
    )
