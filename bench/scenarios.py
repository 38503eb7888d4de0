"""The benchmark's phases: the raw loop, the Celery floor, throughput, ingest and paced latency."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import threading
import time
from typing import Any

import orjson
import psycopg
import redis

from devstack.process import BASE_DIR

from .stack import PY, Proc, Sampler, Stack, api, sink_stats


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- phases -------------------------------------------------------------------------------------


def measure_raw(stack: Stack, sink: str, count: int, payload: int) -> dict[str, float]:
    out = subprocess.run(
        [PY, "-m", "bench.raw", sink + "/ok/raw", str(count), str(payload)],
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
    base: str, key: str, event_type: str, events: int, batch: int, payload: int, clients: int = 4
) -> tuple[float, float]:
    """Post `events` in batches from `clients` threads; returns (first post time, seconds)."""
    filler = "x" * payload
    batches = [min(batch, events - i) for i in range(0, events, batch)]
    lock = threading.Lock()
    first: list[float] = []

    def worker() -> None:
        while True:
            with lock:
                if not batches:
                    return
                size = batches.pop()
                if not first:
                    first.append(time.time())
            now = time.time()
            body = [{"type": event_type, "data": {"t": now, "filler": filler}} for _ in range(size)]
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
    deadline = time.monotonic() + timeout
    stats = sink_stats(sink)
    while stats["ok"] < expected_ok and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = sink_stats(sink)
    attempts = 0
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as conn:
            attempts = conn.execute("SELECT count(*) FROM deliveries_deliveryattempt").fetchone()[0]
        if attempts >= expected_attempts:
            break
        time.sleep(0.1)
    stats["attempts_recorded"] = attempts
    return stats


def setup_endpoints(
    base: str, key: str, sink: str, event_type: str, fanout: int, bad: int, mode: str
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
            {"url": sink + path, "event_types": [event_type]},
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
) -> dict[str, Any]:
    sink_stats(sink, reset=True)
    with psycopg.connect(dsn) as conn:
        before = conn.execute("SELECT count(*) FROM deliveries_deliveryattempt").fetchone()[0]
    with Sampler(procs) as sampler:
        first, ingest_seconds = post_batches(base, key, event_type, events, batch, payload)
        stats = wait_delivered(
            sink,
            dsn,
            events * healthy,
            before + events * healthy,
            timeout=max(120, events * fanout / 100),
        )
    received = stats["received"]
    latencies = [(r - i) * 1000 for r, i in zip(received, stats["ingested"], strict=True)]
    seconds = (max(received) - first) if received else float("nan")
    return {
        "events": events,
        "expected_ok": events * healthy,
        "deliveries_ok": stats["ok"],
        "ingest_rate": events / ingest_seconds,
        "seconds": seconds,
        "rate": stats["ok"] / seconds,
        "attempts_recorded": stats["attempts_recorded"] - before,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
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
    sink_stats(sink, reset=True)
    with psycopg.connect(dsn) as conn:  # before the worker can record anything of this phase
        attempts = conn.execute("SELECT count(*) FROM deliveries_deliveryattempt").fetchone()[0]
    tree = worker.tree()
    for p in tree:
        p.suspend()
    try:
        with Sampler([p for p in procs if p.name in ("web", "postgres")]) as sampler:
            _, seconds = post_batches(
                base, key, "bench.healthy", events, args.batch, args.payload_bytes
            )
    finally:
        for p in tree:
            p.resume()
    wait_delivered(sink, dsn, events * args.fanout, attempts + events * args.fanout, timeout=300)
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
) -> dict[str, Any]:
    """Post at a steady `rate_events`/s in small batches every 20 ms; latency at the sink."""
    sink_stats(sink, reset=True)
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
                [{"type": event_type, "data": {"t": now, "filler": filler}} for _ in range(size)],
            )
            sent += size
        next_tick += tick
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    deadline = time.monotonic() + 60
    stats = sink_stats(sink)
    while stats["ok"] < sent * healthy and time.monotonic() < deadline:
        time.sleep(0.1)
        stats = sink_stats(sink)
    latencies = [(r - i) * 1000 for r, i in zip(stats["received"], stats["ingested"], strict=True)]
    accepted = [(r - a) * 1000 for r, a in zip(stats["received"], stats["accepted"], strict=True)]
    return {
        "events": sent,
        "target_rate": rate_events * healthy,
        "deliveries_ok": stats["ok"],
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "accepted_p50_ms": percentile(accepted, 0.5),
        "accepted_p99_ms": percentile(accepted, 0.99),
    }
