"""`make soak`: a chaos soak of the whole stack, with the faults the product promises to survive.

On free ports it starts PostgreSQL (fsync on), Redis, gunicorn, two workers with the default
worker command, beat and a verifying consumer (bench/soak_sink.py). It posts `--events` events
over `--seconds`, each fanned out to five endpoints: three healthy, one failing ~30% of requests
with 500, one answering in 0.5-3 s. Meanwhile, on a schedule (fractions of the load's length):
- 15%: one worker's whole process group is SIGKILLed and a new worker started;
- 30%: Redis is killed, its data removed, and it starts again empty on the same port;
- 45%: PostgreSQL is SIGKILLed (a crash) and started again;
- 65%: the other original worker is SIGKILLed and a new one started;
- 80%: the consumer is SIGSTOPped for 20 s, then SIGCONTed.
Then it waits (at most `--settle` seconds after ingestion ends) until every delivery has ended,
and reports: events accepted and lost, deliveries lost, deliveries not ended, requests whose
signature did not verify, duplicates (a 2xx answered twice for one delivery), requests the
consumer got without an attempt row, time to settle, worker exits not scheduled, and whether the
metrics API equals the database's counts. It exits 1 when a promise did not hold.

Traffic goes to 127.0.0.1 only; every loop is bounded in count and time.

Run: python -m bench.soak [--events 4000] [--seconds 240] [--settle 599] [--write FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
import urllib3

from bench.report import write_section
from bench.stack import HTTP, PY, Stack, api, log
from devstack.services import LocalPostgres, LocalRedis

ENDPOINTS = ("ok/1", "ok/2", "ok/3", "flaky/1", "slow/1")
# Short retries for every endpoint: the soak ends in minutes, and a consumer stopped for 20 s
# makes every endpoint fail for a while (the default schedule's second retry is at 5 min).
SCHEDULE = [2, 5, 10, 20, 30, 60, 60, 60, 60, 60]
# Long enough for a delivery that uses the whole schedule (with 10% jitter, and a timeout per
# try) to end: a flaky delivery failing nine times in a row was still pending after 300 s.
SETTLE = round(sum(SCHEDULE) * 1.1 + 11 * 15 + 30)
START, END = "<!-- soak:start -->", "<!-- soak:end -->"


class Soak:
    def __init__(self, args: argparse.Namespace, argv: list[str]) -> None:
        self.args = args
        self.argv = argv
        self.stack = Stack.create("webhooks-soak-", LOG_LEVEL="INFO")
        self.workers: list[str] = []
        self.exits: dict[str, int] = {}  # worker name -> exit status, for exits not scheduled
        self.killed: set[str] = set()
        self.answers: Counter[int] = Counter()
        self.accepted: list[str] = []
        self.faults: list[tuple[float, str]] = []
        self.t0 = 0.0

    # --- the stack ---

    def start(self) -> None:
        self.dsn, self.key = self.stack.start_data()
        self.pg: LocalPostgres = self.stack.services[0]
        self.redis: LocalRedis = self.stack.services[1]
        self.sink = self.stack.start_sink("bench.soak_sink")
        _, self.base = self.stack.serve_web("web", workers=2, threads=4)
        for _ in range(2):
            self.start_worker()
        self.stack.spawn(
            "beat",
            [PY, "-m", "celery", "-A", "webhooks_project", "beat", "-l", "INFO"],
            ready="beat: Starting",
        )
        api(
            self.base,
            self.key,
            "POST",
            "/api/v1/event-types/",
            {"name": "soak.tick", "schema": {"type": "object"}},
        )
        secrets = {}
        for path in ENDPOINTS:
            created = api(
                self.base,
                self.key,
                "POST",
                "/api/v1/endpoints/",
                {
                    "url": f"{self.sink}/{path}",
                    "event_types": ["soak.tick"],
                    "retry_schedule": SCHEDULE,
                },
            )
            secrets["/" + path] = created["secret"]
        HTTP.request("POST", self.sink + "/secrets", body=orjson.dumps(secrets))

    def start_worker(self) -> str:
        name = f"worker{len(self.workers) + 1}"
        self.stack.spawn(
            name,
            [PY, "-m", "celery", "-A", "webhooks_project", "worker", "-l", "INFO"],
            ready=" ready.",
        )
        self.workers.append(name)
        return name

    def kill_worker(self, name: str) -> None:
        proc = self.stack.procs.pop(name)
        self.killed.add(name)
        proc.kill()  # the whole group; it may have died already (counted in `exits`)

    def note(self, what: str) -> None:
        self.faults.append((time.monotonic() - self.t0, what))
        log(what)

    # --- the faults, in order ---

    def faults_plan(self) -> list[tuple[float, Callable[[], None]]]:
        at = self.args.seconds

        def kill_first() -> None:
            self.kill_worker("worker1")
            self.note(f"SIGKILLed worker1's process group; started {self.start_worker()}")

        def redis_empty() -> None:
            pids = {name: self.worker_pids(name) for name in self.live_workers()}
            self.redis.stop(kill=True)
            shutil.rmtree(self.redis.data_dir, ignore_errors=True)
            self.redis = LocalRedis(self.redis.data_dir, port=self.redis.port, persist=False)
            self.redis.start()
            self.stack.services[1] = self.redis
            self.note(f"Redis killed, data removed, started empty (workers {sorted(pids)} running)")
            self.redis_pids = pids

        def postgres_crash() -> None:
            self.pg.stop(kill=True)
            time.sleep(3)  # the outage lasts a few seconds
            self.pg = LocalPostgres(self.pg.data_dir, port=self.pg.port).start()
            self.stack.services[0] = self.pg
            self.note("PostgreSQL SIGKILLed, down 3 s, started again")

        def kill_second() -> None:
            self.kill_worker("worker2")
            self.note(f"SIGKILLed worker2's process group; started {self.start_worker()}")

        def stop_consumer() -> None:
            sink = self.stack.procs["sink"]
            assert sink.popen is not None
            sink.popen.send_signal(signal.SIGSTOP)
            self.note("consumer SIGSTOPped for 20 s")
            time.sleep(20)
            sink.popen.send_signal(signal.SIGCONT)
            self.note("consumer SIGCONTed")

        return [
            (0.15 * at, kill_first),
            (0.30 * at, redis_empty),
            (0.45 * at, postgres_crash),
            (0.65 * at, kill_second),
            (0.80 * at, stop_consumer),
        ]

    def live_workers(self) -> list[str]:
        return [name for name in self.workers if name in self.stack.procs]

    def worker_pids(self, name: str) -> set[int]:
        proc = self.stack.procs.get(name)
        return {p.pid for p in proc.tree()} if proc else set()

    def same_processes_after_redis(self) -> bool:
        """Every worker running when Redis restarted, unless killed on schedule since, still
        runs with the same main and pool processes."""
        return all(
            pids and pids <= self.worker_pids(name)
            for name, pids in self.redis_pids.items()
            if name not in self.killed
        )

    def watch_workers(self) -> None:
        for name in self.workers:
            proc = self.stack.procs.get(name)
            if proc is not None and not proc.alive() and name not in self.exits:
                self.exits[name] = proc.returncode
                log(f"{name} exited with {proc.returncode} (not scheduled)")

    # --- the load ---

    def post_events(self) -> None:
        http = urllib3.PoolManager(maxsize=4)
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        every = self.args.seconds / self.args.events
        for n in range(self.args.events):
            due = self.t0 + n * every
            time.sleep(max(0.0, due - time.monotonic()))
            body = orjson.dumps({"type": "soak.tick", "data": {"n": n}})
            try:
                response = http.request(
                    "POST",
                    self.base + "/api/v1/events/",
                    body=body,
                    headers=headers,
                    retries=False,
                    timeout=30,
                )
                status = response.status
            except urllib3.exceptions.HTTPError:
                status = 0  # no answer at all: counted, never retried (a new event would be)
            self.answers[status] += 1
            if status == 202:
                self.accepted.append(orjson.loads(response.data)["id"])

    def run(self) -> dict[str, Any]:
        self.start()
        self.t0 = time.monotonic()
        poster = threading.Thread(target=self.post_events, daemon=True)
        poster.start()
        for at, fault in [] if self.args.no_faults else self.faults_plan():
            while time.monotonic() - self.t0 < at:
                self.watch_workers()
                time.sleep(0.2)
            fault()
        poster.join(timeout=self.args.seconds * 2)
        ingested = time.monotonic()
        self.note(f"ingestion ended: {dict(self.answers)}")
        settled = self.settle(ingested)
        return self.report(ingested, settled)

    def counts(self) -> dict[str, int]:
        with psycopg.connect(self.dsn, connect_timeout=5) as conn:
            return dict(
                conn.execute(
                    "SELECT status, count(*) FROM deliveries_delivery GROUP BY status"
                ).fetchall()
            )

    def settle(self, ingested: float) -> float | None:
        deadline = ingested + self.args.settle
        while time.monotonic() < deadline:
            self.watch_workers()
            try:
                counts = self.counts()
            except psycopg.OperationalError:
                counts = {}
            open_ = counts.get("pending", 0) + counts.get("in_flight", 0)
            if counts and not open_ and sum(counts.values()) >= len(self.accepted) * len(ENDPOINTS):
                return time.monotonic() - ingested
            time.sleep(1)
        return None

    # --- the verdict ---

    def report(self, ingested: float, settled: float | None) -> dict[str, Any]:
        time.sleep(2)  # a last recorder flush after the final state change
        seen = orjson.loads(HTTP.request("GET", self.sink + "/dump", timeout=60).data)
        with psycopg.connect(self.dsn) as conn:
            stored = {r[0] for r in conn.execute("SELECT id FROM deliveries_event")}
            # per delivery: its status, its attempts, whether a try timed out (the consumer
            # was stopped) or was lost with its worker, so the consumer may have answered after
            # we stopped waiting; and how many attempts succeeded. Two succeeded attempts mean
            # a claim lost with PostgreSQL (claims commit without waiting for the WAL flush):
            # both sends answered and were recorded. Any other way there would be a bug.
            rows = conn.execute(
                "SELECT d.event_id, p.url, d.status, count(a.id),"
                "       coalesce(bool_or(a.error_class IN ('read_timeout', 'worker_lost')), false),"
                "       count(a.id) FILTER (WHERE a.outcome = 'succeeded')"
                "  FROM deliveries_delivery d JOIN webhooks_endpoint p ON p.id = d.endpoint_id"
                "  LEFT JOIN deliveries_deliveryattempt a ON a.delivery_id = d.id"
                " GROUP BY d.event_id, p.url, d.status"
            ).fetchall()
            outcomes = dict(
                conn.execute(
                    "SELECT outcome, count(*) FROM deliveries_deliveryattempt GROUP BY outcome"
                ).fetchall()
            )
            latency = {
                url.removeprefix(self.sink): (round(p50, 2), round(p99, 2), n)
                for url, p50, p99, n in conn.execute(
                    "SELECT p.url,"
                    " percentile_cont(0.5) WITHIN GROUP (ORDER BY x.s),"
                    " percentile_cont(0.99) WITHIN GROUP (ORDER BY x.s), count(*)"
                    "  FROM (SELECT d.endpoint_id,"
                    "        extract(epoch FROM d.completed_at - e.created_at) AS s"
                    "          FROM deliveries_delivery d"
                    "          JOIN deliveries_event e ON e.id = d.event_id"
                    "         WHERE d.status = 'succeeded') x"
                    "  JOIN webhooks_endpoint p ON p.id = x.endpoint_id GROUP BY p.url"
                ).fetchall()
            }
        attempts = {(event, url.removeprefix(self.sink)): n for event, url, _, n, _, _ in rows}
        unsure = {(event, url.removeprefix(self.sink)) for event, url, *_, u, _ in rows if u}
        lost_claim = {(e, url.removeprefix(self.sink)) for e, url, *_, ok in rows if ok > 1}
        statuses = Counter(status for _, _, status, *_ in rows)
        requests = Counter((wid, path) for path, wid, _, _ in seen)
        ok_twice = Counter((wid, path) for path, wid, _, status in seen if status == 200)
        metrics = api(self.base, self.key, "GET", "/api/v1/metrics/?window=24h")
        accepted = set(self.accepted)
        result = {
            "command": " ".join(["python -m bench.soak", *self.argv]),
            "events_accepted": len(accepted),
            "answers": dict(self.answers),
            "events_lost": len(accepted - stored),
            "deliveries_expected": len(stored) * len(ENDPOINTS),
            "deliveries_lost": len(stored) * len(ENDPOINTS) - len(rows),
            "statuses": dict(statuses),
            "not_ended": statuses.get("pending", 0) + statuses.get("in_flight", 0),
            "requests": sum(requests.values()),
            "unverified": sum(1 for _, _, verified, _ in seen if not verified),
            "duplicates": sum(c - 1 for c in ok_twice.values()),
            "duplicates_after_timeout_or_lost_worker": sum(
                c - 1 for key, c in ok_twice.items() if key in unsure
            ),
            "duplicates_after_lost_claim": sum(
                c - 1 for key, c in ok_twice.items() if key in lost_claim and key not in unsure
            ),
            "without_attempt_row": sum(
                max(0, n - attempts.get(key, 0)) for key, n in requests.items()
            ),
            "attempts": outcomes,
            "latency_seconds": latency,  # accepted -> 2xx recorded: p50, p99, deliveries
            "settled_seconds": settled,
            "faults": [(round(t), what) for t, what in self.faults],
            "worker_restarts_scheduled": len(self.killed),
            "worker_exits_not_scheduled": self.exits,
            "workers_alive_after_redis": self.args.no_faults or self.same_processes_after_redis(),
            "metrics": {
                "succeeded": metrics["deliveries"]["succeeded"],
                "failed": metrics["deliveries"]["failed"],
                "dead": metrics["deliveries"]["dead"],
                "retried": metrics["retries"]["failed_attempts_retried"],
                "lost": metrics["retries"]["attempts_lost"],
            },
            "database": {
                "succeeded": statuses.get("succeeded", 0),
                "failed": statuses.get("failed", 0),
                "dead": statuses.get("dead", 0),
                "retried": outcomes.get("retrying", 0),
                "lost": outcomes.get("unknown", 0),
            },
        }
        result["held"] = {
            "nothing lost": result["events_lost"] == 0 and result["deliveries_lost"] == 0,
            "nothing left open": result["not_ended"] == 0 and settled is not None,
            "every request verified": result["unverified"] == 0,
            "every request in the audit log": result["without_attempt_row"] == 0,
            "every duplicate explained": result["duplicates"]
            == result["duplicates_after_timeout_or_lost_worker"]
            + result["duplicates_after_lost_claim"],
            "workers survived Redis": result["workers_alive_after_redis"] and not self.exits,
            "metrics equal the database": result["metrics"] == result["database"],
            "only 202 or 503": set(self.answers) <= {202, 503},
        }
        return result


def render(r: dict[str, Any]) -> str:
    held = "\n".join(f"| {k} | {'yes' if v else '**no**'} |" for k, v in r["held"].items())
    faults = "\n".join(f"- {t} s: {what}" for t, what in r["faults"])
    return f"""{START}
## Chaos soak (issue 19)

`{r["command"]}` (`make soak`): production-mode stack (DEBUG off, PostgreSQL with fsync), two
workers started with the default command, beat, gunicorn; five endpoints per event (three
healthy, one answering 500 to 30% of requests, one answering in 0.5-3 s), each with the retry
schedule {SCHEDULE}.

Faults, in seconds from the start of the load:
{faults}

| measurement | value |
|---|---|
| events accepted (202) / API answers | {r["events_accepted"]} / {r["answers"]} |
| events lost / deliveries lost | {r["events_lost"]} / {r["deliveries_lost"]} of {r["deliveries_expected"]} |
| deliveries by status | {r["statuses"]} |
| deliveries not ended when it settled | {r["not_ended"]} |
| time to settle after ingestion ended | {r["settled_seconds"] and round(r["settled_seconds"])} s |
| requests the consumer got / not verified (Standard Webhooks library) | {r["requests"]} / {r["unverified"]} |
| duplicates (a 200 answered twice for one delivery) / of which after a try that timed out or lost its worker / after a claim lost with PostgreSQL | {r["duplicates"]} / {r["duplicates_after_timeout_or_lost_worker"]} / {r.get("duplicates_after_lost_claim", "-")} |
| requests without an attempt row | {r["without_attempt_row"]} |
| attempts by outcome | {r["attempts"]} |
| accepted to 2xx recorded, seconds: p50, p99, deliveries, per endpoint | {r["latency_seconds"]} |
| worker restarts scheduled / exits not scheduled | {r["worker_restarts_scheduled"]} / {r["worker_exits_not_scheduled"] or "none"} |
| metrics API (24 h) / database | {r["metrics"]} / {r["database"]} |

| promise | held |
|---|---|
{held}
{END}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--settle", type=float, default=SETTLE)
    parser.add_argument("--no-faults", action="store_true", help="the same load, no faults")
    parser.add_argument("--write", default=None, help="write the report to this Markdown file")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    shown = [a for i, a in enumerate(argv) if "--write" not in (a, argv[i - 1] if i else "")]
    soak = Soak(args, [a for a in shown if not a.startswith("--write=")])
    try:
        result = soak.run()
    finally:
        logs = soak.stack.tmp
        keep = os.environ.get("SOAK_KEEP_LOGS")
        if keep:
            shutil.copytree(
                logs, keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("postgres", "redis")
            )
        soak.stack.close()
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    report = render(result)
    if args.write:
        write_section(args.write, report, START, END)
    return 0 if all(result["held"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
