"""The machine's limit for signed POSTs: one process, aiohttp on uvloop, `INFLIGHT` requests at
once, each body serialized and signed (Standard Webhooks v1) as the service does. No database,
no queue. The pipeline's throughput is reported against this (issue 15), beside the urllib3
loop of `bench.raw`.

Run: python -m bench.raw_async URL COUNT PAYLOAD_BYTES [INFLIGHT]  -> prints one JSON line
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import orjson

from bench.raw import signed_request
from webhooks import signing

try:
    import uvloop
except ImportError:  # pragma: no cover - the dev extra installs it
    uvloop = None


async def _run(url: str, count: int, payload_bytes: int, inflight: int) -> dict[str, float]:
    key = signing.secret_key(signing.generate_secret())
    filler = "x" * payload_bytes
    todo = iter(range(count))
    statuses: dict[int, int] = {}

    async def client(session: aiohttp.ClientSession) -> None:
        for n in todo:
            body, headers = signed_request(key, n, filler)
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=inflight)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        cpu = time.process_time()
        await asyncio.gather(*(client(session) for _ in range(inflight)))
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    if set(statuses) != {200}:
        raise RuntimeError(f"the sink answered {statuses}")
    return {
        "count": count,
        "seconds": seconds,
        "rate": count / seconds,
        "cpu_seconds": cpu,
        "inflight": inflight,
        "uvloop": uvloop is not None,
    }


def main(url: str, count: int, payload_bytes: int, inflight: int = 32) -> None:
    run = uvloop.run if uvloop is not None else asyncio.run
    result = run(_run(url, count, payload_bytes, inflight))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *(int(a) for a in sys.argv[4:5]))
