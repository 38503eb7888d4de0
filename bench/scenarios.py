"""The benchmark's phases: the raw loop, the Celery floor, throughput, ingest and paced latency."""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis

from devstack.process import BASE_DIR

from .stack import PY, Proc, Sampler, Stack, api, sink_count, sink_stats

# How often a phase looks at the sink or the database while it waits: each look costs the
# system measured a request (the sink) or a query (PostgreSQL), O(1) either way.
POLL = 0.2


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- phases -------------------------------------------------------------------------------------


def measure_raw(
    stack: Stack, sink: str, count: int, payload: int, module: str = "bench.raw"
) -> dict[str, float]:
    """A raw sign-and-POST loop (`bench.raw`, urllib3; `bench.raw_async`, the machine's limit:
    aiohttp on uvloop, 32 in flight) in its own process, against the sink."""
    out = subprocess.run(
        [PY, "-m", module, sink + "/ok/raw", str(count), str(payload)],
        cwd=BASE_DIR,
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return orjson.loads(out.strip().splitlines()[-1])


def measure_noop(stack: Stack, count: int) -> dict[str, float]:
    proc = stack.spawn(
        "noop-worker",
        [
            PY,
            "-m",
            "celery",
            "-A",
            "bench.noop_app",
            "worker",
            "-l",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-P",
            "prefork",
            "-c",
            str(os.cpu_count() or 2),
        ],
    )
    from bench.noop_app import app

    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    client.delete("bench:noop:done")
    time.sleep(3)  # let the worker come up (its banner is silent at WARNING)
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task("bench.noop", producer=producer)
    deadline = time.monotonic() + 300
    while int(client.get("bench:noop:done") or 0) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    done = int(client.get("bench:noop:done") or 0)
    cpu = proc.cpu()
    stack.stop("noop-worker")
    return {"count": done, "seconds": seconds, "rate": done / seconds, "worker_cpu_s": cpu}


def post_batches(
    base: str,
    key: str,
    event_type: str,
    events: int,
    batch: int,
    payload: int,
    clients: int = 4,
    tag: str = "",
    keys: int = 0,
) -> tuple[float, float]:
    """Post `events` in batches from `clients` threads, each payload carrying the phase's `tag`;
    returns (first post time, seconds). With `keys`, the events carry ordering keys, in turn
    over that many."""
    filler = "x" * payload
    batches = [min(batch, events - i) for i in range(0, events, batch)]
    lock = threading.Lock()
    first: list[float] = []
    posted = itertools.count()

    def worker() -> None:
        while True:
            with lock:
                if not batches:
                    return
                size = batches.pop()
                if not first:
                    first.append(time.time())
            now = time.time()
            data = {"t": now, "tag": tag, "filler": filler}
            body: list[dict[str, Any]] = [{"type": event_type, "data": data} for _ in range(size)]
            if keys:
                with lock:
                    for item in body:
                        item["ordering_key"] = f"k{next(posted) % keys}"
            api(base, key, "POST", "/api/v1/events/batch/", body)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return first[0], time.perf_counter() - started


def wait_delivered(
    sink: str, dsn: str, expected_ok: int, expected_attempts: int, timeout: float
) -> dict[str, Any]:
    """Wait until the sink has `expected_ok` requests of this phase and PostgreSQL
    `expected_attempts` attempt rows, at most `timeout` seconds; then read the phase's
    receipts once. `complete` says whether both arrived in time."""
    deadline = time.monotonic() + timeout
    while sink_count(sink)["ok"] < expected_ok and time.monotonic() < deadline:
        time.sleep(POLL)
    attempts = 0
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as conn:
            attempts = conn.execute("SELECT count(*) FROM deliveries_deliveryattempt").fetchone()[0]
        if attempts >= expected_attempts:
            break
        time.sleep(POLL)
    stats = sink_stats(sink)
    stats["attempts_recorded"] = attempts
    stats["complete"] = stats["ok"] >= expected_ok and attempts >= expected_attempts
    return stats


# Deliveries still to be sent to an endpoint that answers (the bench's healthy paths are /ok/).
_OWED_HEALTHY = """
SELECT count(*) FROM deliveries_delivery d JOIN webhooks_endpoint e ON e.id = d.endpoint_id
 WHERE d.status IN ('pending', 'in_flight') AND e.url LIKE '%%/ok/%%'
"""


def wait_drained(dsn: str, timeout: float = 300) -> None:
    """Wait until no healthy endpoint is owed a delivery: each phase starts from a drained
    system, so its figures hold none of the previous phase's work. Raises if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(dsn) as conn:
            owed = conn.execute(_OWED_HEALTHY).fetchone()[0]
        if not owed:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not drained after {timeout:.0f} s: {owed} deliveries owed")
        time.sleep(POLL)


def setup_endpoints(
    base: str,
    key: str,
    sink: str,
    event_type: str,
    fanout: int,
    bad: int,
    mode: str,
    **fields: Any,
) -> None:
    api(
        base,
        key,
        "POST",
        "/api/v1/event-types/",
        {"name": event_type, "schema": {"type": "object"}},
    )
    for i in range(fanout):
        path = f"/ok/{event_type}/{i}" if i >= bad else f"/{mode}/{event_type}/{i}"
        api(
            base,
            key,
            "POST",
            "/api/v1/endpoints/",
            {"url": sink + path, "event_types": [event_type], **fields},
        )


def run_throughput(
    base: str,
    key: str,
    sink: str,
    dsn: str,
    event_type: str,
    events: int,
    fanout: int,
    healthy: int,
    payload: int,
    batch: int,
    procs: list[Proc],
    tag: str = "throughput",
    keys: int = 0,
) -> dict[str, Any]:
    wait_drained(dsn)
    sink_stats(sink, reset=True, tag=tag)
    with psycopg.connect(dsn) as conn:
        before = conn.execute("SELECT count(*) FROM deliveries_deliveryattempt").fetchone()[0]
    with Sampler(procs) as sampler:
        first, ingest_seconds = post_batches(
            base, key, event_type, events, batch, payload, tag=tag, keys=keys
        )
        stats = wait_delivered(
            sink,
            dsn,
            events * healthy,
            before + events * healthy,
            timeout=max(120, events * fanout / 100),
        )
    received = stats["received"]
    latencies = [(r - i) * 1000 for r, i in zip(received, stats["ingested"], strict=True)]
    accepted = [(r - a) * 1000 for r, a in zip(received, stats["accepted"], strict=True)]
    seconds = (max(received) - first) if received else float("nan")
    return {
        "events": events,
        "expected_ok": events * healthy,
        "deliveries_ok": stats["ok"],
        "ingest_rate": events / ingest_seconds,
        "seconds": seconds,
        "rate": stats["ok"] / seconds,
        "attempts_recorded": stats["attempts_recorded"] - before,
        "complete": stats["complete"],
        "stray": stats["stray"],
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "max_accepted_ms": max(accepted, default=float("nan")),
        "processes": sampler.report(),
    }


def measure_ingest(
    base: str,
    key: str,
    sink: str,
    dsn: str,
    worker: Proc,
    events: int,
    args: argparse.Namespace,
    procs: list[Proc],
) -> dict[str, Any]:
    """Ingestion on its own: the worker is paused (SIGSTOP), so the web server and PostgreSQL
    have the machine; events are validated, stored and fanned out, then the worker resumes and
    delivers them (not timed)."""
    wait_drained(dsn)
    sink_stats(sink, reset=True, tag="ingest")
    with psycopg.connect(dsn) as conn:  # before the worker can record anything of this phase
        attempts = conn.execute("SELECT count(*) FROM deliveries_deliveryattempt").fetchone()[0]
    tree = worker.tree()
    for p in tree:
        p.suspend()
    try:
        with Sampler([p for p in procs if p.name in ("web", "postgres")]) as sampler:
            _, seconds = post_batches(
                base, key, "bench.healthy", events, args.batch, args.payload_bytes, tag="ingest"
            )
    finally:
        for p in tree:
            p.resume()
    done = wait_delivered(
        sink, dsn, events * args.fanout, attempts + events * args.fanout, timeout=300
    )
    if not done["complete"]:  # the next phase must not start with this one's backlog
        raise RuntimeError(
            f"ingest phase: {done['ok']} of {events * args.fanout} delivered, "
            f"{done['attempts_recorded'] - attempts} attempts recorded after 300 s"
        )
    return {
        "events": events,
        "seconds": seconds,
        "rate": events / seconds,
        "processes": sampler.report(),
    }


def run_paced(
    base: str,
    key: str,
    sink: str,
    event_type: str,
    rate_events: float,
    seconds: float,
    payload: int,
    healthy: int,
    dsn: str,
    tag: str = "paced",
) -> dict[str, Any]:
    """Post at a steady `rate_events`/s in small batches every 20 ms; latency at the sink, of
    this phase's deliveries only, from a drained system."""
    wait_drained(dsn)
    sink_stats(sink, reset=True, tag=tag)
    tick = 0.02
    per_tick = rate_events * tick
    filler = "x" * payload
    owed = 0.0
    sent = 0
    started = time.perf_counter()
    next_tick = started
    while time.perf_counter() - started < seconds:
        owed += per_tick
        size = int(owed)
        if size:
            owed -= size
            now = time.time()
            api(
                base,
                key,
                "POST",
                "/api/v1/events/batch/",
                [
                    {"type": event_type, "data": {"t": now, "tag": tag, "filler": filler}}
                    for _ in range(size)
                ],
            )
            sent += size
        next_tick += tick
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    deadline = time.monotonic() + 60
    while sink_count(sink)["ok"] < sent * healthy and time.monotonic() < deadline:
        time.sleep(POLL)
    stats = sink_stats(sink)
    latencies = [(r - i) * 1000 for r, i in zip(stats["received"], stats["ingested"], strict=True)]
    accepted = [(r - a) * 1000 for r, a in zip(stats["received"], stats["accepted"], strict=True)]
    return {
        "events": sent,
        "target_rate": rate_events * healthy,
        "deliveries_ok": stats["ok"],
        "stray": stats["stray"],
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "accepted_p50_ms": percentile(accepted, 0.5),
        "accepted_p99_ms": percentile(accepted, 0.99),
    }


_FLOOR_ROWS = """
SELECT e.created_at, d.last_attempt_at, a.started_at, d.completed_at
  FROM deliveries_event e
  JOIN deliveries_delivery d ON d.event_id = e.id
  JOIN deliveries_deliveryattempt a ON a.delivery_id = d.id AND a.number = 1
 WHERE e.type = %s
 ORDER BY e.id
"""


def measure_floor(
    base: str, key: str, sink: str, dsn: str, count: int, payload: int
) -> dict[str, Any]:
    """The idle floor of the whole path, stage by stage: `count` single events to one endpoint,
    each sent once the previous one arrived. Stages (medians, ms): the client's POST to the
    event's acceptance (`created_at`), acceptance to the claim (publish on commit, the Celery
    hop, the claim: `last_attempt_at`), the claim to the request's start (envelope, signing,
    the lane), the request's start to the sink's receipt, and the receipt to the recorded
    attempt (`completed_at`)."""
    event_type = "bench.floor"
    setup_endpoints(base, key, sink, event_type, 1, 0, "ok")
    wait_drained(dsn)
    sink_stats(sink, reset=True, tag="floor")
    filler = "x" * payload
    sent: list[float] = []
    for n in range(count):
        sent.append(time.time())
        data = {"t": sent[-1], "tag": "floor", "filler": filler}
        api(base, key, "POST", "/api/v1/events/", {"type": event_type, "data": data})
        deadline = time.monotonic() + 30
        while sink_count(sink)["ok"] <= n and time.monotonic() < deadline:
            time.sleep(0.002)  # idle: nothing else runs, and each wait is short
    wait_drained(dsn)  # a delivery leaves in_flight in the transaction that records its attempt
    stats = sink_stats(sink)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(_FLOOR_ROWS, [event_type]).fetchall()
    if not len(rows) == len(stats["received"]) == count:  # paired by order: all or nothing
        raise RuntimeError(
            f"idle floor: {count} sent, {len(stats['received'])} received, {len(rows)} recorded"
        )
    stages: dict[str, list[float]] = {
        "post_to_accepted": [],
        "accepted_to_claimed": [],
        "claimed_to_request": [],
        "request_to_receipt": [],
        "receipt_to_recorded": [],
        "total": [],
    }
    for t0, row, received in zip(sent, rows, stats["received"], strict=True):
        accepted, claimed, started, recorded = (v.timestamp() for v in row)
        for name, value in (
            ("post_to_accepted", accepted - t0),
            ("accepted_to_claimed", claimed - accepted),
            ("claimed_to_request", started - claimed),
            ("request_to_receipt", received - started),
            ("receipt_to_recorded", recorded - received),
            ("total", received - t0),
        ):
            stages[name].append(value * 1000)
    return {name: statistics.median(values) for name, values in stages.items() if values} | {
        "count": len(rows)
    }


_SWEPT = re.compile(
    r"requeue_stuck\[[^\]]*\] succeeded in [0-9.e-]+s: \{'reclaimed': (\d+), 'published': (\d+)\}"
)


def swept_since(log: Path, offset: int) -> tuple[int, int, int]:
    """What the sweeper did since `offset` of the worker's log (its INFO lines name each run's
    result): (deliveries it published or took back, sweeps seen, the log's new end). A
    delivery of a healthy endpoint that the sweeper had to publish waited for a sweep."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
        end = f.tell()
    runs = _SWEPT.findall(text)
    return sum(int(a) + int(b) for a, b in runs), len(runs), end
