"""`make bench`: the delivery pipeline measured against the machine's own limits, in one run.

On free ports it starts PostgreSQL, Redis and a fast asyncio sink, then measures:
1. raw loop: one process signing and POSTing sequentially with urllib3 (the practical limit);
2. Celery floor: a bare no-op task published and consumed on the same Redis;
3. this project: gunicorn + the default worker command + beat; events posted to
   /api/v1/events/batch/ with fan-out to N endpoints, until the sink has every request and
   PostgreSQL has every attempt (end-to-end throughput, ingest rate);
4. latency at half of that peak (ingest time in the payload against receipt time at the sink);
5. the same with a fraction of the endpoints failing (500) or hanging past their timeout.
Every figure is also given as a ratio to the raw loop measured in the same run.

Run: python -m bench.run [--quick] [--events N] [--fanout N] [--payload-bytes N]
     [--failing-fraction F] [--write docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from .report import render, write_section
from .scenarios import (
    measure_floor,
    measure_ingest,
    measure_noop,
    measure_raw,
    run_paced,
    run_throughput,
    setup_endpoints,
    swept_since,
)
from .stack import PY, Stack, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--quick", action="store_true", help="small counts (a CI smoke check)")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--fanout", type=int, default=10)
    parser.add_argument("--payload-bytes", type=int, default=256)
    parser.add_argument("--failing-fraction", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=100, help="events per batch POST")
    parser.add_argument("--paced-seconds", type=float, default=None)
    parser.add_argument("--write", default=None, help="write the report to this Markdown file")
    args = parser.parse_args(argv)
    events = args.events or (300 if args.quick else 5000)
    paced_seconds = args.paced_seconds or (3.0 if args.quick else 10.0)
    raw_count = 2000 if args.quick else 20000
    noop_count = 2000 if args.quick else 20000
    bad = round(args.fanout * args.failing_fraction)

    stack = Stack.create("webhooks-bench-")
    results: dict[str, Any] = {"args": vars(args) | {"events": events}}
    try:
        dsn, key = stack.start_data()
        os.environ["REDIS_URL"] = stack.env["REDIS_URL"]
        sink = stack.start_sink()

        log(f"raw loop: {raw_count} signed POSTs")
        results["raw"] = measure_raw(stack, sink, raw_count, args.payload_bytes)
        log(f"  {results['raw']['rate']:.0f} req/s")
        log(f"asyncio limit: {raw_count} signed POSTs, aiohttp on uvloop, 32 in flight")
        results["raw_async"] = measure_raw(
            stack, sink, raw_count, args.payload_bytes, module="bench.raw_async"
        )
        log(f"  {results['raw_async']['rate']:.0f} req/s")
        log(f"Celery no-op: {noop_count} tasks")
        results["noop"] = measure_noop(stack, noop_count)
        log(f"  {results['noop']['rate']:.0f} tasks/s")

        web, base = stack.serve_web("web", workers=2, threads=4)
        worker, beat = stack.start_engine()
        time.sleep(1)
        procs = [web, worker, beat, stack.procs["sink"], *stack.service_procs()]

        setup_endpoints(base, key, sink, "bench.healthy", args.fanout, 0, "ok")
        log("warm-up")

        def healthy_burst(count: int, tag: str = "throughput") -> dict[str, Any]:
            """`count` events to the ten healthy endpoints, first POST to last attempt."""
            return run_throughput(
                base,
                key,
                sink,
                dsn,
                "bench.healthy",
                count,
                args.fanout,
                args.fanout,
                args.payload_bytes,
                args.batch,
                procs,
                tag=tag,
            )

        healthy_burst(100)
        floor_count = 20 if args.quick else 100
        log(f"idle floor: {floor_count} single events, one at a time")
        results["floor"] = measure_floor(base, key, sink, dsn, floor_count, args.payload_bytes)
        log(f"  {results['floor']['total']:.1f} ms from POST to receipt (median)")
        log(f"pipeline, all healthy: {events} events x {args.fanout} endpoints")
        healthy = healthy_burst(events)
        results["healthy"] = healthy
        log(f"  {healthy['rate']:.0f} deliveries/s, ingest {healthy['ingest_rate']:.0f} events/s")

        log(f"ingestion alone (worker paused): {events} events")
        results["ingest"] = measure_ingest(base, key, sink, dsn, worker, events, args, procs)
        log(f"  {results['ingest']['rate']:.0f} events/s")

        half = 0.5 * healthy["rate"] / args.fanout
        log(f"latency at half peak: {half * args.fanout:.0f} deliveries/s for {paced_seconds} s")
        results["paced"] = run_paced(
            base,
            key,
            sink,
            "bench.healthy",
            half,
            paced_seconds,
            args.payload_bytes,
            args.fanout,
            dsn,
        )
        log(
            f"  p50 {results['paced']['p50_ms']:.1f} ms, p99 {results['paced']['p99_ms']:.1f} ms"
            f" (from acceptance: {results['paced']['accepted_p50_ms']:.1f} /"
            f" {results['paced']['accepted_p99_ms']:.1f} ms)"
        )

        log(f"pipeline, all healthy, under a one-core CPU hog: {events} events")
        worker_log = stack.tmp / "worker.log"
        _, _, offset = swept_since(worker_log, 0)
        stack.spawn("hog", [PY, "-c", HOG])
        try:
            results["hog"] = healthy_burst(events, tag="hog")
        finally:
            stack.stop("hog")
        results["hog"]["swept"], results["hog"]["sweeps"], _ = swept_since(worker_log, offset)
        log(
            f"  {results['hog']['rate']:.0f} deliveries/s "
            f"({results['hog']['rate'] / healthy['rate']:.2f} of quiet), "
            f"{results['hog']['swept']} published or taken back by the sweeper "
            f"in {results['hog']['sweeps']} sweeps"
        )

        for mode in ("fail", "hang"):
            if not bad:
                break
            event_type = f"bench.{mode}"
            setup_endpoints(base, key, sink, event_type, args.fanout, bad, mode)
            good = args.fanout - bad
            log(f"pipeline, {bad} of {args.fanout} endpoints {mode}ing")
            run = run_throughput(
                base,
                key,
                sink,
                dsn,
                event_type,
                events,
                args.fanout,
                good,
                args.payload_bytes,
                args.batch,
                procs,
            )
            run["paced"] = run_paced(
                base, key, sink, event_type, half, paced_seconds, args.payload_bytes, good, dsn
            )
            results[mode] = run
            log(
                f"  healthy endpoints: {run['rate']:.0f} deliveries/s, paced p99 "
                f"{run['paced']['p99_ms']:.1f} ms, worker peak RSS "
                f"{run['processes']['worker']['peak_rss_mb']} MB"
            )
    finally:
        stack.close()

    report = render(results)
    print(report)
    # Correctness, not speed: every healthy delivery arrived and every attempt was recorded.
    problems = []
    for name in ("healthy", "hog", "fail", "hang"):
        run = results.get(name)
        if run and run["deliveries_ok"] < run["expected_ok"]:
            problems.append(f"{name}: {run['deliveries_ok']} of {run['expected_ok']} received")
        if run and run["attempts_recorded"] < run["expected_ok"]:
            problems.append(f"{name}: {run['attempts_recorded']} attempts recorded")
    if problems:
        log("FAILED: " + "; ".join(problems))
        return 1
    if args.write:
        # its own section: the other benchmarks' sections and the hand-written ones stay
        write_section(args.write, f"{START}\n{report}\n{END}", START, END)
        log(f"wrote {args.write}")
    return 0


# One core busy for the hog phase; bounded: the bench stops it (and `Stack.close` on any exit).
HOG = "import time\nend = time.monotonic() + 900\nwhile time.monotonic() < end: pass"

START = "<!-- pipeline:start -->"
END = "<!-- pipeline:end -->"


if __name__ == "__main__":
    sys.exit(main())
