"""POST a signed body to a consumer with a pooled urllib3 client. Never raises for network errors.

Redirects are never followed, and at most `max_response_bytes` of the answer are read: a huge
response closes the connection instead of being buffered.

`timeout` is a deadline for the whole request (connect, send, status line, headers and body):
urllib3's timeouts apply to each socket read, so a consumer trickling one byte at a time could
otherwise hold a sending thread for ever. One watcher thread per process shuts the socket of any
request still running at its deadline.

Failures are classified (`error_class`): `refused`, `reset`, `dns`, `tls`, `connect_timeout`,
`read_timeout` (no answer, or not all of it, in time), `protocol` (an answer HTTP cannot parse)
and `connection` (any other network failure).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import urllib3
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from webhooks_project.process_local import ProcessLocal

ERROR_CLASSES = (
    "refused",
    "reset",
    "dns",
    "tls",
    "connect_timeout",
    "read_timeout",
    "protocol",
    "connection",
)


class _Deadlines:
    """Shuts the socket of each watched connection whose deadline passes before it is
    forgotten; one daemon thread, sleeping until the nearest deadline."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._watched: dict[int, Any] = {}
        self._expired: set[int] = set()
        self._ids = itertools.count()
        threading.Thread(target=self._run, name="http-deadlines", daemon=True).start()

    def watch(self, conn: Any, deadline: float) -> int:
        token = next(self._ids)
        with self._lock:
            self._watched[token] = conn
            heapq.heappush(self._heap, (deadline, token))
            self._lock.notify()
        return token

    def forget(self, token: int) -> bool:
        """Stop watching; True if the deadline had already passed (the socket was shut)."""
        with self._lock:
            self._watched.pop(token, None)
            if token in self._expired:
                self._expired.discard(token)
                return True
            return False

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._heap:
                    self._lock.wait()
                deadline, token = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._lock.wait(wait)
                    continue
                heapq.heappop(self._heap)
                conn = self._watched.pop(token, None)
                if conn is None:
                    continue
                self._expired.add(token)
                sock = getattr(conn, "sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):  # already closed
                        sock.shutdown(socket.SHUT_RDWR)


_deadlines = ProcessLocal(_Deadlines)
_request_deadline = threading.local()


class _WatchedPool:
    """A connection pool whose connections are watched against the calling thread's deadline."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]  # the pool it is mixed into
        deadline = getattr(_request_deadline, "at", None)
        if deadline is not None:
            _stop_watching()  # one connection watched per request
            _request_deadline.token = _deadlines.get().watch(conn, deadline)
        return conn


def _stop_watching() -> bool:
    """Stop watching this thread's connection; whether its deadline had passed (its socket was
    shut). Idempotent within a request: later calls repeat the first answer."""
    token = getattr(_request_deadline, "token", None)
    if token is not None:
        _request_deadline.token = None
        _request_deadline.expired = _deadlines.get().forget(token) or getattr(
            _request_deadline, "expired", False
        )
    return bool(getattr(_request_deadline, "expired", False))


class _WatchedHTTPPool(_WatchedPool, HTTPConnectionPool):
    pass


class _WatchedHTTPSPool(_WatchedPool, HTTPSConnectionPool):
    pass


@dataclass(frozen=True)
class TransportResult:
    """What happened to one HTTP request; `status_code` is None when no response came back."""

    status_code: int | None
    duration_ms: float
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""
    error_class: str = ""  # one of ERROR_CLASSES (or the sender's own, e.g. ssrf_blocked)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_connections_per_host = 16


def keep_connections(per_host: int) -> None:
    """Keep up to `per_host` connections open to each host (at least 16): as many as the
    process sends with at once. With fewer, each extra request opens and discards a connection.
    Call it before the process's first request (the sender does, with its thread count)."""
    global _connections_per_host
    _connections_per_host = max(16, per_host)


def _new_pool() -> urllib3.PoolManager:
    manager = urllib3.PoolManager(num_pools=256, maxsize=_connections_per_host, block=False)
    manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
    return manager


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
    _request_deadline.at = time.monotonic() + timeout
    _request_deadline.token = None
    _request_deadline.expired = False
    try:
        result = _post(url, body, headers, timeout, connect_timeout, max_response_bytes, address)
    finally:
        expired = _stop_watching()
        _request_deadline.at = None
    if expired and not result.ok:
        return TransportResult(
            status_code=None,
            duration_ms=result.duration_ms,
            error=f"no complete answer within the {timeout:g} s deadline",
            error_class="read_timeout",
        )
    return result


def _post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    connect_timeout: float,
    max_response_bytes: int,
    address: str | None,
) -> TransportResult:
    started = time.perf_counter()
    try:
        options: dict[str, Any] = {
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
            # watching stops before the connection goes back to the pool: a socket the watcher
            # shut (the deadline passed as the answer completed) must not be reused
            if complete and not _stop_watching():
                response.release_conn()
            else:
                response.close()  # never drain a huge or broken answer into memory
        return TransportResult(
            status_code=response.status,
            duration_ms=(time.perf_counter() - started) * 1000,
            body=data[:max_response_bytes].decode("utf-8", errors="replace"),
            headers={k.lower(): v for k, v in response.headers.items()},
        )
    except (HTTPError, ssl.SSLError, OSError) as exc:
        return _failure(started, classify(exc), exc)


def _cause_errno(exc: BaseException) -> int | None:
    """The errno of the OS error at the root of `exc` (urllib3 wraps them)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno:
            return current.errno
        nested = [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        current = nested[-1] if nested else (current.__cause__ or current.__context__)
    return None


def classify(exc: BaseException) -> str:
    """The error class of a failed request (see the module's doc). Order matters: in urllib3
    2, NewConnectionError is a subclass of ConnectTimeoutError, so a refused connection must be
    recognised before a connect timeout."""
    code = _cause_errno(exc)
    if isinstance(exc, (NameResolutionError, socket.gaierror)):
        return "dns"
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
        return "reset"
    if isinstance(exc, SSLError | ssl.SSLError):
        return "tls"
    if isinstance(exc, NewConnectionError):
        return "connection"  # unreachable host or network, and the like
    if isinstance(exc, ConnectTimeoutError):
        return "connect_timeout"
    if isinstance(exc, ReadTimeoutError | TimeoutError | socket.timeout):
        return "read_timeout"
    if isinstance(exc, ProtocolError):
        text = str(exc).lower()
        if "reset" in text or "aborted" in text:
            return "reset"
        if "remote end closed" in text or "incomplete" in text:
            return "connection"
        return "protocol"
    if isinstance(exc, HTTPError):
        return "protocol"
    return "connection"


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
