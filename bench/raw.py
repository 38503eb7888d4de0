"""The practical limit: one Python process that signs (Standard Webhooks v1) and POSTs with a
pooled urllib3 client, sequentially, to the sink. No database, no queue.

Run: python -m bench.raw URL COUNT PAYLOAD_BYTES  -> prints one JSON line
"""

from __future__ import annotations

import sys
import time

import orjson
import urllib3

from webhooks import signing


def signed_request(key: bytes, n: int, filler: str) -> tuple[bytes, dict[str, str]]:
    """The `n`th request of a raw loop: a body like the service's, serialized once and signed
    (Standard Webhooks v1), and its headers."""
    msg_id = f"evt_raw{n}"
    ts = int(time.time())
    body = orjson.dumps(
        {
            "type": "bench.event",
            "timestamp": "2026-01-01T00:00:00Z",
            "data": {"n": n, "t": time.time(), "filler": filler},
        }
    )
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signing.signature_header([key], msg_id, ts, body),
    }
    return body, headers


def main(url: str, count: int, payload_bytes: int) -> None:
    key = signing.secret_key(signing.generate_secret())
    pool = urllib3.PoolManager(maxsize=4)
    filler = "x" * payload_bytes
    started = time.perf_counter()
    cpu = time.process_time()
    for n in range(count):
        body, headers = signed_request(key, n, filler)
        response = pool.request("POST", url, body=body, headers=headers, retries=False)
        assert response.status == 200, response.status
    seconds = time.perf_counter() - started
    print(
        orjson.dumps(
            {
                "count": count,
                "seconds": seconds,
                "rate": count / seconds,
                "cpu_seconds": time.process_time() - cpu,
            }
        ).decode(),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
