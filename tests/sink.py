"""A real local HTTP consumer for tests: records every request and answers as each path is told."""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    """One request as the consumer saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Plan:
    """Answers for one path: statuses in order, the last one repeating; optional delay."""

    statuses: list[int] = field(default_factory=lambda: [200])
    delay: float = 0.0
    first_delay: float = 0.0  # only the first request waits this long (a consumer that hangs)
    # "reset": drop the connection with a TCP RST; "huge": answer 50 MB; "trickle": headers,
    # then one byte of the body every `delay` seconds (a consumer holding the request open)
    mode: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    served: int = 0

    def next_status(self) -> int:
        status = self.statuses[min(self.served, len(self.statuses) - 1)]
        self.served += 1
        return status


class _QuietServer(ThreadingHTTPServer):
    """A client that hung up before reading our answer (a timeout test, a worker stopped) is
    what these tests provoke: not an error worth a traceback; anything else still is one."""

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class Sink:
    """Start with `Sink().start()`; `url(name)` is a path on it; `requests(name)` what arrived."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict[str, Plan] = {}
        self._received: list[Received] = []
        # ordered deliveries: requests open now per (path, key), and each time a second one of
        # a key arrived while one was open
        self._open: Counter[tuple[str, str]] = Counter()
        self.overlaps: list[tuple[str, str]] = []
        self._arrived = threading.Condition(self._lock)
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                # an ordered delivery's key: its requests are counted while open (overlaps)
                key = self.headers.get("webhook-ordering-key")
                try:
                    self._post(key)
                finally:
                    if key is not None:
                        with sink._lock:
                            sink._open[(self.path, key)] -= 1

            def _post(self, key: str | None) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                name = self.path.lstrip("/")
                with sink._lock:
                    if key is not None:
                        sink._open[(self.path, key)] += 1
                        if sink._open[(self.path, key)] > 1:
                            sink.overlaps.append((name, key))
                    # a plan for this path and key (`name#key`) first, else for the path
                    planned = f"{name}#{key}" if f"{name}#{key}" in sink._plans else name
                    plan = sink._plans.setdefault(planned, Plan())
                    delay = (
                        plan.first_delay if plan.served == 0 and plan.first_delay else plan.delay
                    )
                    status = plan.next_status()
                    extra, mode = dict(plan.headers), plan.mode
                    sink._received.append(
                        Received(
                            path=name,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                            at=time.time(),
                        )
                    )
                    sink._arrived.notify_all()
                if mode == "trickle":
                    self._trickle(status, delay)
                    return
                if delay:
                    time.sleep(delay)
                if mode == "reset":
                    linger = struct.pack("ii", 1, 0)
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    self.connection.close()
                    self.close_connection = True
                    return
                if mode == "huge":
                    self._send_huge(status)
                    return
                payload = b'{"ok": true}' if status < 300 else b'{"error": "planned"}'
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _trickle(self, status: int, every: float, size: int = 60) -> None:
                self.send_response(status)
                self.send_header("content-length", str(size))
                self.end_headers()
                try:
                    for _ in range(size):  # bounded: at most `size` bytes, `size * every` s
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(every)
                except OSError:
                    pass  # the client gave up, as it should
                self.close_connection = True

            def _send_huge(self, status: int, size: int = 50 * 1024 * 1024) -> None:
                self.send_response(status)
                self.send_header("content-length", str(size))
                self.end_headers()
                chunk = b"x" * 65536
                try:
                    for _ in range(size // len(chunk)):
                        self.wfile.write(chunk)
                except OSError:
                    pass  # the client stopped reading, as it should
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Sink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def plan(
        self,
        name: str,
        *statuses: int,
        delay: float = 0.0,
        first_delay: float = 0.0,
        mode: str = "",
        **headers: str,
    ) -> None:
        with self._lock:
            self._plans[name] = Plan(
                list(statuses) or [200], delay, first_delay, mode=mode, headers=headers
            )

    def reset(self) -> None:
        with self._lock:
            self._plans.clear()
            self._received.clear()
            self.overlaps.clear()

    def requests(self, name: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if name is None or r.path == name]

    def wait_for(self, count: int, name: str | None = None, timeout: float = 20) -> list[Received]:
        """Block until at least `count` requests (to `name`) arrived; returns them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [r for r in self._received if name is None or r.path == name]
                if len(got) >= count:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return got
                self._arrived.wait(remaining)
