"""The consumer for the chaos soak (bench/soak.py): asyncio, keep-alive, HTTP/1.1.

Paths: /ok/<n> answers 200; /flaky/<n> answers 500 to a share of requests (`FLAKY_SHARE`, from
a seeded generator) and 200 to the rest; /slow/<n> answers 200 after 0.5-3 s. Every request is
verified on receipt with the Standard Webhooks library, against the secrets the soak posts to
`POST /secrets` ({"<path>": "whsec_..."}). `GET /dump` answers every request seen:
path, webhook-id, whether its signature verified, the status answered.

Run: python -m bench.soak_sink PORT
"""

from __future__ import annotations

import asyncio
import random
import sys

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bench import sink

FLAKY_SHARE = 0.3
SLOW_SECONDS = (0.5, 3.0)

_rng = random.Random(1234)  # noqa: S311 - which requests fail, not a secret
_secrets: dict[str, Webhook] = {}
_seen: list[tuple[str, str, bool, int]] = []  # (path, webhook-id, verified, status answered)


def _response(status: int, body: bytes = b"") -> bytes:
    reason = {200: b"OK", 500: b"Internal Server Error", 404: b"Not Found"}[status]
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (status, reason, len(body))
        + body
    )


def _verified(path: str, headers: dict[str, str], body: bytes) -> bool:
    hook = _secrets.get(path)
    if hook is None:
        return False
    try:
        hook.verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


class Consumer(sink.Consumer):
    """bench/sink.py's parser; every request answered as the soak's endpoints do."""

    def handle(self, head: bytes, body: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        method, path = lines[0].split(" ")[:2]
        self.answer(method, path, headers, body)

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        write = self.transport.write  # type: ignore[attr-defined]
        if method == "GET" and path == "/dump":
            write(_response(200, orjson.dumps(_seen)))
            return
        if method == "POST" and path == "/secrets":
            _secrets.update({k: Webhook(v) for k, v in orjson.loads(body).items()})
            write(_response(200, b"{}"))
            return
        verified = _verified(path, headers, body)
        status, delay = 200, 0.0
        if path.startswith("/flaky/"):
            status = 500 if _rng.random() < FLAKY_SHARE else 200
        elif path.startswith("/slow/"):
            delay = _rng.uniform(*SLOW_SECONDS)
        elif not path.startswith("/ok/"):
            status = 404
        _seen.append((path, headers.get("webhook-id", ""), verified, status))
        if delay:
            asyncio.get_running_loop().call_later(delay, write, _response(status))
        else:
            write(_response(status))


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Consumer, "127.0.0.1", port, backlog=1024)
    print("ready", server.sockets[0].getsockname()[1], flush=True)  # port 0: the one it got
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
