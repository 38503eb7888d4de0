"""What tracing costs: the same events delivered with tracing off (the default) and on (every
span exported over OTLP/HTTP to a local collector), in one run, on one database.

    python -m bench.tracing [--events 3000] [--rounds 2] [--history 100000]
                            [--write docs/BENCHMARKS.md]

Starts PostgreSQL (fsync on, with a month of history: `bench.fill`), Redis, the asyncio sink and
a local OTLP collector (`bench.otlp_sink`, counting what it receives) on free ports. For each
phase the web (gunicorn), the default worker command and beat are started with or without
`OTEL_EXPORTER_OTLP_ENDPOINT` (every trace sampled, or one in ten), warmed up, measured, and
stopped; the phases run in turn, each round in a rotated order. Each event goes to 10 endpoints
that ask for the `traceparent` header. Deliveries per second from the first POST to the last receipt with every attempt recorded, the
p50 from POST to receipt, the CPU seconds the web and the worker spent per 1,000 deliveries,
and the spans the collector received per delivery. Medians of the rounds, as ratios to off.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.fill import fill_month
from bench.report import write_section
from bench.scenarios import run_throughput, setup_endpoints
from bench.stack import Proc, Stack, log

START, END = "<!-- tracing:start -->", "<!-- tracing:end -->"
HISTORY_DAYS = 30
FANOUT = 10
EVENT_TYPE = "bench.traced"
# tracing: off, on with every trace sampled, on with one trace in ten sampled (the producer's
# request is the root, so a sampled request's events are sampled with all their deliveries)
PHASES = ("off", "on", "sampled")  # also the sink's tags: plain words
LABELS = {"off": "off (the default)", "on": "on, every trace", "sampled": "on, 1 trace in 10"}
SAMPLED = {
    "on": {},
    "sampled": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
}


def _collector_count(url: str) -> int:
    with urllib.request.urlopen(url + "/count", timeout=10) as answer:  # noqa: S310 - loopback
        return int(answer.read())


def _settled_count(url: str, quiet: float = 6.0, most: float = 60.0) -> int:
    """The collector's count once it has not moved for `quiet` seconds (longer than the SDK's
    5 s export interval): the last spans of a phase are in."""
    deadline = time.monotonic() + most
    count, since = _collector_count(url), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.5)
        now = _collector_count(url)
        if now != count:
            count, since = now, time.monotonic()
    return count


def _start_phase(stack: Stack, phase: str, collector: str) -> tuple[list[Proc], str]:
    """The web, the worker and beat, with tracing on or off; (their procs, the web's base)."""
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
    ):
        stack.env.pop(name, None)
    if phase in SAMPLED:
        stack.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector
        stack.env["OTEL_SERVICE_NAME"] = "webhooks-bench"
        stack.env.update(SAMPLED[phase])
    web, base = stack.serve_web("web", workers=2, threads=4)
    worker, beat = stack.start_engine()
    return [web, worker, beat], base


def _stop_phase(stack: Stack) -> None:
    for name in ("web", "worker", "beat"):
        stack.stop(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--history", type=int, default=100_000, help="events of a past month")
    parser.add_argument("--write", default=None)
    args = parser.parse_args(argv)
    stack = Stack.create("webhooks-tracing-")
    runs: dict[str, list[dict[str, Any]]] = {phase: [] for phase in PHASES}
    try:
        dsn, key = stack.start_data()
        os.environ["REDIS_URL"] = stack.env["REDIS_URL"]
        sink = stack.start_sink()
        collector = stack.start_sink(module="bench.otlp_sink", name="collector")
        procs, base = _start_phase(stack, "off", collector)
        setup_endpoints(base, key, sink, EVENT_TYPE, FANOUT, 0, "ok", trace_propagation=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            endpoints = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM webhooks_endpoint WHERE %s = ANY(event_types)", [EVENT_TYPE]
                )
            ]
            log(f"a month of history: {args.history} events over {HISTORY_DAYS} day partitions")
            fill_month(
                conn,
                endpoints=endpoints[:1],
                event_type=EVENT_TYPE,
                events=args.history,
                days=HISTORY_DAYS,
                log=log,
            )
            conn.execute("CHECKPOINT")
        _stop_phase(stack)
        for round_ in range(args.rounds):
            for phase in PHASES[round_ % 3 :] + PHASES[: round_ % 3]:
                procs, base = _start_phase(stack, phase, collector)
                measured = [*procs, *stack.service_procs()]
                run_throughput(  # warm-up: connections, caches, the first spans' exports
                    base, key, sink, dsn, EVENT_TYPE, 200, FANOUT, FANOUT, 256, args.batch,
                    measured, tag=f"warm-{phase}",
                )  # fmt: skip
                spans_before = _collector_count(collector)
                run = run_throughput(
                    base, key, sink, dsn, EVENT_TYPE, args.events, FANOUT, FANOUT, 256,
                    args.batch, measured, tag=phase,
                )  # fmt: skip
                run["spans"] = _settled_count(collector) - spans_before
                _stop_phase(stack)
                runs[phase].append(run)
                log(
                    f"round {round_ + 1}, tracing {phase}: {run['rate']:.0f} deliveries/s, "
                    f"p50 {run['p50_ms']:.0f} ms, {run['spans']} spans, "
                    f"complete {run['complete']}"
                )
    finally:
        stack.close()
    report = _render(args, runs)
    print(report)
    incomplete = [phase for phase, rs in runs.items() if not all(r["complete"] for r in rs)]
    if (
        incomplete
        or any(r["spans"] for r in runs["off"])
        or not all(r["spans"] for r in runs["on"])
    ):
        log(f"FAILED: incomplete {incomplete}, or spans where there should be none / some")
        return 1
    if args.write:
        write_section(args.write, f"{START}\n{report}\n{END}", START, END)
        log(f"wrote {args.write}")
    return 0


def _cpu_per_thousand(run: dict[str, Any], name: str) -> float:
    """CPU seconds of one process (with its children) per 1,000 deliveries."""
    return 1000 * run["processes"][name]["cpu_s"] / max(1, run["deliveries_ok"])


def _render(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> str:
    rate = {p: statistics.median(r["rate"] for r in rs) for p, rs in runs.items()}
    ingest = {p: statistics.median(r["ingest_rate"] for r in rs) for p, rs in runs.items()}
    p50 = {p: statistics.median(r["p50_ms"] for r in rs) for p, rs in runs.items()}
    cpu = {
        (p, name): statistics.median(_cpu_per_thousand(r, name) for r in rs)
        for p, rs in runs.items()
        for name in ("web", "worker")
    }
    spans = {
        p: statistics.median(r["spans"] / max(1, r["deliveries_ok"]) for r in rs)
        for p, rs in runs.items()
    }
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lines = [
        "## What tracing costs (issue 17)",
        "",
        f"Produced by `python -m bench.tracing --events {args.events} --rounds {args.rounds}`"
        f" (part of `make bench`) on {when}: {machine}. PostgreSQL (fsync on) holding a month of"
        f" history ({args.history} events over {HISTORY_DAYS} days), Redis, the asyncio sink, a"
        " local OTLP/HTTP collector, gunicorn (2 x 4) and the default worker command with beat,"
        " on loopback, restarted for each phase with tracing off (the default) or on"
        " (`OTEL_EXPORTER_OTLP_ENDPOINT` set), every trace sampled or one in ten"
        " (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.1`). Each event to"
        f" {FANOUT}"
        f" endpoints that ask for `traceparent`; {args.batch} events per batch POST from 4"
        " clients; from the first POST to the last receipt with every attempt recorded. The"
        " phases run in turn, each round in a rotated order; medians of the rounds.",
        "",
        "| tracing | deliveries/s (each round) | median | against off | events/s ingested |"
        " p50 POST to receipt | CPU s per 1,000 deliveries: web / worker | spans per delivery |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for phase, rs in runs.items():
        each = " / ".join(f"{r['rate']:.0f}" for r in rs)
        lines.append(
            f"| {LABELS[phase]} | {each} | {rate[phase]:.0f} | {rate[phase] / rate['off']:.2f} |"
            f" {ingest[phase]:.0f} | {p50[phase]:.0f} ms | {cpu[(phase, 'web')]:.2f} /"
            f" {cpu[(phase, 'worker')]:.2f} | {spans[phase]:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
