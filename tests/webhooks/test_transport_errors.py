"""Each way a request can fail is recorded as its own class, tested against real sockets on
127.0.0.1; and a request has one deadline in all, however its consumer trickles its answer."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.sink import Sink
from webhooks import atransport, transport

Post = Callable[..., transport.TransportResult]


@pytest.fixture
def post() -> Iterator[Post]:
    """A request through the sender's transport, with one client (its pool) for the whole
    test, on one event loop, as the sender does."""
    options = {"connect_timeout": 1.0, "max_response_bytes": 4096}
    headers = {"content-type": "application/json"}
    loop = asyncio.new_event_loop()
    client = loop.run_until_complete(_client())

    def run(url: str, **kwargs: float) -> transport.TransportResult:
        call = client.post(url, b"{}", headers, **(options | {"timeout": 2.0} | kwargs))
        return loop.run_until_complete(call)

    yield run
    loop.run_until_complete(client.close())
    loop.close()


async def _client() -> atransport.Client:
    return atransport.Client()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens here once closed


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A listening socket that never accepts, its backlog filled: new SYNs are dropped."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    fillers = []
    for _ in range(8):
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        fillers.append(client)
    yield port
    for client in fillers:
        client.close()
    server.close()


@pytest.fixture
def plain_tcp() -> Iterator[int]:
    """A server that answers anything with plain text (so a TLS handshake fails)."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(5)
    server.close()


def test_a_refused_connection_is_refused_not_a_timeout(post: Post, closed_port: int) -> None:
    result = post(f"http://127.0.0.1:{closed_port}/x")
    assert result.status_code is None
    assert result.error_class == "refused", result.error


def test_a_reset_is_reset(post: Post, sink: Sink) -> None:
    sink.plan("rst", 200, mode="reset")
    assert post(sink.url("rst")).error_class == "reset"


def test_a_name_that_does_not_resolve_is_dns(post: Post) -> None:
    assert post("http://no-such-host.invalid/x").error_class == "dns"


def test_a_failed_handshake_is_tls(post: Post, plain_tcp: int) -> None:
    assert post(f"https://127.0.0.1:{plain_tcp}/x").error_class == "tls"


def test_a_connect_that_gets_no_answer_is_connect_timeout(post: Post, full_backlog: int) -> None:
    result = post(f"http://127.0.0.1:{full_backlog}/x", timeout=2.0, connect_timeout=0.5)
    assert result.error_class == "connect_timeout", result.error


def test_no_answer_in_time_is_read_timeout(post: Post, sink: Sink) -> None:
    sink.plan("hang", 200, delay=5)
    assert post(sink.url("hang"), timeout=0.5).error_class == "read_timeout"


def test_a_trickled_answer_is_cut_at_the_deadline(post: Post, sink: Sink) -> None:
    # one byte every 0.2 s of a 60-byte body: each read is quick, the whole answer is not
    sink.plan("trickle", 200, delay=0.2, mode="trickle")
    began = time.monotonic()
    result = post(sink.url("trickle"), timeout=1.0)
    elapsed = time.monotonic() - began
    assert result.error_class == "read_timeout", result
    assert result.status_code is None
    # the deadline holds: far below the 12 s the consumer would have taken
    assert elapsed < 6, elapsed
    # and a request after it, on the same pool, is unaffected
    sink.plan("fine", 200)
    assert post(sink.url("fine")).status_code == 200
