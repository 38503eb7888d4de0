"""A fast local HTTP consumer for the benchmark (asyncio, keep-alive, HTTP/1.1).

Paths: /ok/<n> answers 200; /fail/<n> answers 500; /hang/<n> never answers (the client times out).
Each request's payload carries `"t": <unix time at ingest>` and `"tag": "<phase>"`; the sink
keeps the receipt time, that ingest time and the service's acceptance time of every request to
/ok of the current phase, and only counts the others (`stray`: stragglers of an earlier phase).

- `GET /reset/<tag>` empties everything and starts phase `tag` (`/reset`: no tag, every
  request counts);
- `GET /count`: the counts only, O(1): what a benchmark polls while it waits;
- `GET /stats`: the counts and every timestamp, read once at the end of a phase (the
  acceptance times are parsed there, not per request or per poll).

Run: python -m bench.sink PORT
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from datetime import datetime

import orjson

_T = re.compile(rb'"t":\s*([0-9.]+)')
_TAG = re.compile(rb'"tag":\s*"([^"]*)"')
_TS = re.compile(rb'"timestamp":"([^"]+)"')


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self, tag: bytes = b"") -> None:
        self.tag = tag
        self.stray = 0
        self.ok = 0
        self.failed = 0
        self.hung = 0
        self.received: list[float] = []  # receipt times of /ok requests
        self.ingested: list[float] = []  # when the client sent them (`data.t`)
        self.accepted: list[bytes] = []  # when the service accepted them (payload `timestamp`)


STATE = State()


def _unix(iso: bytes) -> float:
    if not iso:
        return 0.0
    return datetime.fromisoformat(iso.decode().replace("Z", "+00:00")).timestamp()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
FAIL = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"


class Consumer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body = self.buffer[head_end + 4 : end]
            self.buffer = self.buffer[end:]
            self.handle(head, body)

    def handle(self, head: bytes, body: bytes) -> None:
        """Answer one request: `head` is its request line and headers, without the blank line."""
        method, path = head.split(b" ", 2)[:2]
        if method == b"GET":
            if path.startswith(b"/reset"):
                STATE.reset(path[len(b"/reset/") :] if path.startswith(b"/reset/") else b"")
                payload = b"{}"
            elif path == b"/count":
                payload = orjson.dumps(
                    {
                        "ok": STATE.ok,
                        "failed": STATE.failed,
                        "hung": STATE.hung,
                        "stray": STATE.stray,
                    }
                )
            else:
                payload = orjson.dumps(
                    {
                        "ok": STATE.ok,
                        "failed": STATE.failed,
                        "hung": STATE.hung,
                        "stray": STATE.stray,
                        "received": STATE.received,
                        "ingested": STATE.ingested,
                        "accepted": [_unix(a) for a in STATE.accepted],
                    }
                )
            self.transport.write(  # type: ignore[attr-defined]
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
            )
            return
        if path.startswith(b"/ok"):
            now = time.time()
            if STATE.tag:
                tag = _TAG.search(body)
                if tag is None or tag.group(1) != STATE.tag:
                    STATE.stray += 1
                    self.transport.write(OK)  # type: ignore[attr-defined]
                    return
            STATE.ok += 1
            match = _T.search(body)
            STATE.received.append(now)
            STATE.ingested.append(float(match.group(1)) if match else 0.0)
            accepted = _TS.search(body)
            STATE.accepted.append(accepted.group(1) if accepted else b"")
            self.transport.write(OK)  # type: ignore[attr-defined]
        elif path.startswith(b"/fail"):
            STATE.failed += 1
            self.transport.write(FAIL)  # type: ignore[attr-defined]
        else:
            STATE.hung += 1  # never answer


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Consumer, "127.0.0.1", port, backlog=1024)
    print("ready", server.sockets[0].getsockname()[1], flush=True)  # port 0: the one it got
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
