"""What content filters cost at ingestion: the same batches to 10 endpoints with filters and to
10 without, in one run.

    python -m bench.routing [--events 3000] [--rounds 3] [--write docs/BENCHMARKS.md]

Starts PostgreSQL (fsync on), Redis and gunicorn on free ports, no worker (deliveries stay
pending: this measures the fan-out, not the sending). Three event types, each with 10
endpoints: `plain` (no filter: the baseline), `filtered` (each endpoint has a filter of five
conditions, `$in`, `$exist`, `$or`, `$gt`, and a per-type one, that every event passes: the same
rows as the baseline, so the difference is the filters' evaluation), and `half` (filters that
let half of the endpoints through: fewer rows). The types are posted in turn, `--rounds` times,
the order rotating each round; medians are reported, each as a ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from datetime import UTC, datetime

import psycopg

from bench.report import write_section
from bench.scenarios import post_batches
from bench.stack import Stack, api, log

START, END = "<!-- routing:start -->", "<!-- routing:end -->"
FANOUT = 10
# every event of the bench passes it: {"t": <time>, "tag": <phase>, "filler": "x..."}
PASSING = {
    "tag": {"$in": ["plain", "filtered", "half"]},
    "filler": {"$exist": True},
    "$or": [{"t": {"$gt": 0}}, {"missing.field": 1}],
}


def _setup(base: str, key: str) -> None:
    for name in ("plain", "filtered", "half"):
        api(base, key, "POST", "/api/v1/event-types/", {"name": f"bench.{name}", "schema": {}})
    for i in range(FANOUT):
        url = f"http://127.0.0.1:9/{i}"  # never sent: no worker runs
        api(base, key, "POST", "/api/v1/endpoints/", {"url": url, "event_types": ["bench.plain"]})
        api(
            base,
            key,
            "POST",
            "/api/v1/endpoints/",
            {
                "url": url,
                "event_types": ["bench.filtered"],
                "filter": PASSING,
                "filters": {"bench.filtered": {"t": {"$gte": 1}}},
            },
        )
        # half of them pass: the other half wait for a tag no event carries
        tag = "half" if i % 2 else "never"
        api(
            base,
            key,
            "POST",
            "/api/v1/endpoints/",
            {"url": url, "event_types": ["bench.half"], "filter": {"tag": tag}},
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--write", default=None)
    args = parser.parse_args(argv)
    stack = Stack.create("webhooks-routing-")
    rates: dict[str, list[float]] = {"plain": [], "filtered": [], "half": []}
    rows: dict[str, int] = {}
    try:
        dsn, key = stack.start_data()
        _, base = stack.serve_web("web", workers=2, threads=4)
        _setup(base, key)
        post_batches(base, key, "bench.plain", 500, args.batch, 256, tag="plain")  # warm-up
        order = list(rates)
        for round_ in range(args.rounds):
            for name in order[round_ % 3 :] + order[: round_ % 3]:
                _, seconds = post_batches(
                    base, key, f"bench.{name}", args.events, args.batch, 256, tag=name
                )
                rates[name].append(args.events / seconds)
                log(f"round {round_ + 1}, {name}: {rates[name][-1]:.0f} events/s")
        with psycopg.connect(dsn) as conn:
            for name in rates:
                rows[name] = conn.execute(
                    "SELECT count(*) FROM deliveries_delivery d JOIN deliveries_event e"
                    " ON e.id = d.event_id WHERE e.type = %s",
                    [f"bench.{name}"],
                ).fetchone()[0]
    finally:
        stack.close()
    report = _render(args, rates, rows)
    print(report)
    expected = {"plain": FANOUT, "filtered": FANOUT, "half": FANOUT // 2}
    total = args.events * args.rounds
    wrong = [n for n in rates if rows[n] != expected[n] * (total + (500 if n == "plain" else 0))]
    if wrong:
        log(f"FAILED: unexpected delivery rows for {wrong}: {rows}")
        return 1
    if args.write:
        write_section(args.write, f"{START}\n{report}\n{END}", START, END)
        log(f"wrote {args.write}")
    return 0


def _render(args: argparse.Namespace, rates: dict[str, list[float]], rows: dict[str, int]) -> str:
    base = statistics.median(rates["plain"])
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lines = [
        "## What content filters cost at ingestion (issue 16)",
        "",
        f"Produced by `python -m bench.routing --events {args.events} --rounds {args.rounds}`"
        f" (part of `make bench`) on {when}: {machine}. PostgreSQL (fsync on), Redis and"
        " gunicorn (2 processes x 4 threads) on loopback, no worker (the deliveries stay"
        f" pending). {args.batch} events per batch POST from 4 clients, each event to"
        f" {FANOUT} endpoints; the three types posted in turn, each round in a rotated order;"
        " medians of the rounds.",
        "",
        "| event type's endpoints | events/s (each round) | median | against no filters |",
        "|---|---|---|---|",
    ]
    labels = {
        "plain": f"{FANOUT} without filters (the baseline)",
        "filtered": f"{FANOUT} with filters that every event passes (5 conditions + 1 per type;"
        " the same rows)",
        "half": f"{FANOUT} with filters that {FANOUT // 2} pass (half the rows)",
    }
    for name, values in rates.items():
        median = statistics.median(values)
        each = " / ".join(f"{v:.0f}" for v in values)
        lines.append(f"| {labels[name]} | {each} | {median:.0f} | {median / base:.2f} |")
    lines += [
        "",
        f"Delivery rows made: {rows['plain']} / {rows['filtered']} / {rows['half']} (plain"
        " includes a 500-event warm-up): every filter decided as written.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
