"""What ordered delivery per key costs: the same events to 10 endpoints without ordering, to 10
that order them over 100 keys, and to 10 that order them all under one key, in one run.

    python -m bench.ordering [--events 2000] [--serial-events 200] [--rounds 2]
                             [--history 100000] [--write docs/BENCHMARKS.md]

Starts PostgreSQL (fsync on, with a month of history: `bench.fill`), Redis, the asyncio sink,
gunicorn, the default worker command and beat on free ports. Each phase posts its events in batches and ends when the sink has every
request and PostgreSQL every attempt: deliveries per second from the first POST to the last
receipt. One key per endpoint is strictly serial (one request, its record, the next one's
claim), so that phase posts fewer events (`--serial-events`). Each phase is checked after the
run: for every endpoint and key, no delivery started before the one before it had succeeded.
Medians of the rounds, as ratios to the unordered baseline of the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.fill import fill_month
from bench.report import write_section
from bench.scenarios import run_throughput, setup_endpoints
from bench.stack import Stack, log

START, END = "<!-- ordering:start -->", "<!-- ordering:end -->"
HISTORY_DAYS = 30
FANOUT = 10
PHASES = {  # event type: (ordering, keys)
    "bench.unordered": ("none", 0),
    "bench.keys100": ("per_key", 100),
    "bench.key1": ("per_key", 1),
}

# A delivery of a key that started (its first attempt) before the one before it in the key had
# succeeded: must be none.
_OUT_OF_TURN = """
SELECT count(*) FROM deliveries_delivery AS a
  JOIN deliveries_delivery AS b
    ON b.endpoint_id = a.endpoint_id AND b.ordering_key = a.ordering_key
   AND b.sequence = a.sequence + 1
  JOIN deliveries_deliveryattempt AS t ON t.delivery_id = b.id AND t.number = 1
 WHERE a.ordering_key IS NOT NULL AND t.started_at < a.completed_at
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ordering")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--serial-events", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--history", type=int, default=100_000, help="events of a past month")
    parser.add_argument("--write", default=None)
    args = parser.parse_args(argv)
    stack = Stack.create("webhooks-ordering-")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in PHASES}
    try:
        dsn, key = stack.start_data()
        os.environ["REDIS_URL"] = stack.env["REDIS_URL"]
        sink = stack.start_sink()
        web, base = stack.serve_web("web", workers=2, threads=4)
        worker, beat = stack.start_engine()
        procs = [web, worker, beat, *stack.service_procs()]
        for name, (ordering, _) in PHASES.items():
            setup_endpoints(base, key, sink, name, FANOUT, 0, "ok", ordering=ordering)
        log(f"a month of history: {args.history} events over {HISTORY_DAYS} day partitions")
        with psycopg.connect(dsn, autocommit=True) as conn:
            endpoints = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM webhooks_endpoint WHERE %s = ANY(event_types)",
                    ["bench.unordered"],
                )
            ]
            fill_month(
                conn,
                endpoints=endpoints[:1],
                event_type="bench.unordered",
                events=args.history,
                days=HISTORY_DAYS,
                log=log,
            )
            conn.execute("CHECKPOINT")
            partitions = conn.execute(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'deliveries_delivery'::regclass"
            ).fetchone()[0]
        time.sleep(1)
        for name, (_, keys) in PHASES.items():  # warm-up
            run_throughput(
                base, key, sink, dsn, name, 100, FANOUT, FANOUT, 256, 100, procs, keys=keys
            )
        order = list(PHASES)
        for round_ in range(args.rounds):
            for name in order[round_ % 3 :] + order[: round_ % 3]:
                keys = PHASES[name][1]
                events = args.serial_events if keys == 1 else args.events
                run = run_throughput(
                    base, key, sink, dsn, name, events, FANOUT, FANOUT, 256, args.batch, procs,
                    tag=name, keys=keys,
                )  # fmt: skip
                runs[name].append(run)
                log(
                    f"round {round_ + 1}, {name}: {run['rate']:.0f} deliveries/s, "
                    f"p50 {run['p50_ms']:.0f} ms, complete {run['complete']}"
                )
        with psycopg.connect(dsn) as conn:
            out_of_turn = conn.execute(_OUT_OF_TURN).fetchone()[0]
            busy = conn.execute(
                "SELECT count(*) FROM deliveries_orderingkey WHERE in_flight IS NOT NULL"
            ).fetchone()[0]
    finally:
        stack.close()
    report = _render(args, runs, out_of_turn, partitions)
    print(report)
    incomplete = [n for n, rs in runs.items() if not all(r["complete"] for r in rs)]
    if incomplete or out_of_turn or busy:
        log(f"FAILED: incomplete {incomplete}, out of turn {out_of_turn}, slots held {busy}")
        return 1
    if args.write:
        write_section(args.write, f"{START}\n{report}\n{END}", START, END)
        log(f"wrote {args.write}")
    return 0


def _render(
    args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], bad: int, partitions: int
) -> str:
    rate = {name: statistics.median(r["rate"] for r in rs) for name, rs in runs.items()}
    p50 = {name: statistics.median(r["p50_ms"] for r in rs) for name, rs in runs.items()}
    base = rate["bench.unordered"]
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lines = [
        "## What ordered delivery costs (issue 16)",
        "",
        f"Produced by `python -m bench.ordering --events {args.events} --serial-events"
        f" {args.serial_events} --rounds {args.rounds}` (part of `make bench`) on {when}:"
        f" {machine}. PostgreSQL (fsync on) holding a month of history ({args.history} events"
        f" over {HISTORY_DAYS} days: {partitions} day partitions of deliveries, which every look"
        " at a key's deliveries reads), Redis, the asyncio sink, gunicorn (2 x 4) and the"
        f" default worker command with beat, on loopback. Each event to {FANOUT} endpoints;"
        f" {args.batch} events per batch POST from 4 clients; from the first POST to the last"
        " receipt with every attempt recorded. The phases run in turn, each round in a"
        " rotated order; medians of the rounds.",
        "",
        "| endpoints | events | deliveries/s (each round) | median | against unordered |"
        " p50 POST to receipt |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "bench.unordered": "no ordering (the baseline)",
        "bench.keys100": "`per_key`, events over 100 keys",
        "bench.key1": "`per_key`, every event under one key (strictly serial per endpoint)",
    }
    for name, rs in runs.items():
        each = " / ".join(f"{r['rate']:.0f}" for r in rs)
        lines.append(
            f"| {labels[name]} | {rs[0]['events']} | {each} | {rate[name]:.0f} |"
            f" {rate[name] / base:.2f} | {p50[name]:.0f} ms |"
        )
    lines += [
        "",
        f"Deliveries of a key that started before the previous one of the key had succeeded:"
        f" {bad} (checked in PostgreSQL after the run, attempts against completion times).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
