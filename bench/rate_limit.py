"""How closely a `rate_limit_per_second` is kept, and what holding deliveries back costs.

    python -m bench.rate_limit [--rate 200] [--events 4000] [--write docs/BENCHMARKS.md]

Starts PostgreSQL (fsync on), Redis, the asyncio sink, gunicorn, the default worker command and
beat on free ports, then posts the same burst of events twice, each to one endpoint:
1. the baseline: an endpoint without a limit;
2. an endpoint limited to `--rate` requests per second.
For each it reports the deliveries per second at the sink, the busiest second, and the row
updates of `deliveries_delivery` per delivery (a claim, a record, and each give-back with its
new claim), read from PostgreSQL's statistics; the limited run as ratios to the baseline and to
the limit. Every delivery must arrive once and be recorded as one succeeded attempt. With
`--write`, the section between the markers in the file is replaced (or appended).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.report import write_section
from bench.scenarios import post_batches
from bench.stack import PY, Stack, api, log, sink_count, sink_stats

BASE_DIR = Path(__file__).resolve().parent.parent
START, END = "<!-- rate-limit:start -->", "<!-- rate-limit:end -->"
STATS_FLUSH = 11.0  # an idle backend reports its statistics within 10 s


def _updates(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'deliveries_delivery'"
        ).fetchone()
    return int(row[0]) if row else 0


def _attempts(dsn: str, event_type: str) -> Counter[tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT a.outcome, a.number, count(*) FROM deliveries_deliveryattempt a"
            " JOIN deliveries_delivery d ON d.id = a.delivery_id"
            " JOIN deliveries_event e ON e.id = d.event_id WHERE e.type = %s"
            " GROUP BY a.outcome, a.number",
            [event_type],
        ).fetchall()
    return Counter({(outcome, number): count for outcome, number, count in rows})


def burst(
    base: str, key: str, sink: str, dsn: str, event_type: str, events: int, timeout: float
) -> dict[str, Any]:
    """Post `events` at once to the one endpoint of `event_type`; wait for all and measure."""
    time.sleep(STATS_FLUSH)
    sink_stats(sink, reset=True)
    before = _updates(dsn)
    post_batches(base, key, event_type, events, 100, 64)
    deadline = time.monotonic() + timeout
    while sink_count(sink)["ok"] < events and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = sink_stats(sink)
    while sum(_attempts(dsn, event_type).values()) < events and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(STATS_FLUSH)
    received = sorted(stats["received"])
    seconds = received[-1] - received[0] if len(received) > 1 else float("nan")
    busiest = max(Counter(int(t - received[0]) for t in received).values()) if received else 0
    return {
        "received": stats["ok"],
        "seconds": seconds,
        "rate": len(received) / seconds,
        "busiest_second": busiest,
        "updates_per_delivery": (_updates(dsn) - before) / events,
        "attempts": _attempts(dsn, event_type),
    }


def render(args: argparse.Namespace, free: dict[str, Any], limited: dict[str, Any]) -> str:
    # the limited run's own rate, past the first second's burst the bucket holds
    paced = (limited["received"] - args.rate) / limited["seconds"]
    lines = [
        START,
        "## Endpoint rate limit",
        "",
        f"Produced by `python -m bench.rate_limit --rate {args.rate} --events {args.events}` "
        f"(part of `make bench`) on {datetime.now(UTC):%Y-%m-%d}: {platform.platform()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}. The same burst of "
        f"{args.events} events, posted at once, to one endpoint without a limit (the baseline) "
        f"and to one limited to {args.rate}/s; the default worker command (its processes share "
        "the limit through Redis). Row updates are `deliveries_delivery` tuples updated per "
        "delivery, from PostgreSQL's statistics: a claim and a record at the least, plus a "
        "give-back and a new claim each time a delivery is held back.",
        "",
        "| measurement | no limit (baseline) | limited | ratio |",
        "|---|---|---|---|",
        f"| deliveries/s at the consumer | {free['rate']:.0f} | {limited['rate']:.0f} | "
        f"{limited['rate'] / free['rate']:.2f} of the baseline |",
        f"| deliveries/s after the first second's burst, against the limit | — | {paced:.0f} | "
        f"{paced / args.rate:.2f} of {args.rate}/s |",
        f"| busiest second | {free['busiest_second']} | {limited['busiest_second']} | "
        f"{limited['busiest_second'] / args.rate:.2f} of the limit (a full bucket and the "
        "refill can make 2) |",
        f"| row updates per delivery | {free['updates_per_delivery']:.2f} | "
        f"{limited['updates_per_delivery']:.2f} | "
        f"{limited['updates_per_delivery'] / free['updates_per_delivery']:.2f}x |",
        f"| attempts recorded | {sum(free['attempts'].values())} | "
        f"{sum(limited['attempts'].values())}, all succeeded at attempt 1: "
        f"{limited['attempts'] == Counter({('succeeded', 1): args.events})} | — |",
        END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rate_limit")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--write", default=None)
    args = parser.parse_args(argv)

    stack = Stack.create("rate-limit-bench-", WEBHOOKS_ATTEMPT_LOG="false")
    try:
        dsn, key = stack.start_data()
        sink = stack.start_sink()
        _, base = stack.serve_web("web", workers=2)
        celery = [PY, "-m", "celery", "-A", "webhooks_project"]
        stack.spawn("worker", [*celery, "worker", "-l", "INFO"], ready=" ready.")
        stack.spawn("beat", [*celery, "beat", "-l", "INFO"], ready="beat: Starting")

        endpoints = (("bench.warm", None), ("bench.free", None), ("bench.limited", args.rate))
        for name, limit in endpoints:
            api(base, key, "POST", "/api/v1/event-types/", {"name": name, "schema": {}})
            api(
                base,
                key,
                "POST",
                "/api/v1/endpoints/",
                {
                    "url": f"{sink}/ok/{name}",
                    "event_types": [name],
                    "rate_limit_per_second": limit,
                },
            )
        timeout = 120 + 3 * args.events / args.rate
        burst(base, key, sink, dsn, "bench.warm", 100, timeout)  # warm-up
        log(f"baseline: {args.events} events to an endpoint without a limit")
        free = burst(base, key, sink, dsn, "bench.free", args.events, timeout)
        log(f"  {free['rate']:.0f}/s, {free['updates_per_delivery']:.2f} updates per delivery")
        log(f"limited: {args.events} events to an endpoint limited to {args.rate}/s")
        limited = burst(base, key, sink, dsn, "bench.limited", args.events, timeout)
        log(
            f"  {limited['rate']:.0f}/s, busiest second {limited['busiest_second']}, "
            f"{limited['updates_per_delivery']:.2f} updates per delivery"
        )
    finally:
        stack.close()

    report = render(args, free, limited)
    print(report)
    problems = [
        f"{name}: {run['received']} of {args.events} received, attempts {dict(run['attempts'])}"
        for name, run in (("baseline", free), ("limited", limited))
        if run["received"] != args.events
        or run["attempts"] != Counter({("succeeded", 1): args.events})
    ]
    if problems:
        log("FAILED: " + "; ".join(problems))
        return 1
    if args.write:
        write_section(args.write, report, START, END)
        log(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
