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
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg
import redis
import urllib3

from webhooks_project.localstack import (
    PORT_TRIES,
    ExitedWhileStarting,
    LocalPostgres,
    LocalRedis,
    free_port,
)

BASE_DIR = Path(__file__).resolve().parent.parent
PY = sys.executable


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    peak_rss: int = 0
    cpu_start: float = 0.0

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> float:
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss(self) -> int:
        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


@dataclass
class Stack:
    tmp: Path
    env: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)
    services: list[Any] = field(default_factory=list)

    def spawn(
        self, name: str, args: list[str], ready: str | None = None, timeout: float = 60
    ) -> Proc:
        log_path = self.tmp / f"{name}.log"
        out = open(log_path, "wb")  # noqa: SIM115 - handed to the child
        popen = subprocess.Popen(
            args,
            cwd=BASE_DIR,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        proc = Proc(name, popen)
        self.procs[name] = proc
        if ready:
            deadline = time.monotonic() + timeout
            while ready not in log_path.read_text(errors="replace"):
                if popen.poll() is not None:
                    self.procs.pop(name, None)
                    raise ExitedWhileStarting(
                        f"{name} exited while starting:\n{log_path.read_text()[-3000:]}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.1)
        return proc

    def spawn_listening(
        self, name: str, args_for: Callable[[int], list[str]], ready: str
    ) -> tuple[Proc, int]:
        """Spawn a server on a free port, on a fresh one if the child exits while starting (the
        port was taken between choosing it and binding it)."""
        for tries_left in reversed(range(PORT_TRIES)):
            port = free_port()
            try:
                return self.spawn(name, args_for(port), ready=ready), port
            except ExitedWhileStarting:
                if not tries_left:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def create(cls, prefix: str, **overrides: str) -> Stack:
        """A stack in a fresh directory (removed by `close`), its processes in dev settings."""
        tmp = Path(tempfile.mkdtemp(prefix=prefix))
        tmp.chmod(0o755)
        env = dict(os.environ)
        env.update(
            {
                "WEBHOOKS_ENV": "dev",
                "DJANGO_DEBUG": "false",
                "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
                "LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(BASE_DIR),
                **overrides,
            }
        )
        return cls(tmp, env)

    def start_data(self) -> tuple[str, str]:
        """PostgreSQL (fsync on) and Redis on free ports, migrated; returns (dsn, API key)."""
        log("starting PostgreSQL and Redis")
        pg = LocalPostgres(self.tmp / "postgres").start()
        self.services.append(pg)
        rd = LocalRedis(self.tmp / "redis", persist=False).start()
        self.services.append(rd)
        self.env["DATABASE_URL"] = dsn = pg.url("webhooks")
        self.env["REDIS_URL"] = rd.url()
        run = partial(subprocess.run, cwd=BASE_DIR, env=self.env, check=True)
        run([PY, "manage.py", "migrate", "-v", "0"])
        created = run([PY, "manage.py", "create_api_key", "bench"], capture_output=True, text=True)
        return dsn, created.stdout.strip().splitlines()[-1]

    def start_sink(self) -> str:
        _, port = self.spawn_listening(
            "sink", lambda port: [PY, "-m", "bench.sink", str(port)], ready="ready"
        )
        return f"http://127.0.0.1:{port}"

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc:
            proc.stop()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        for service in reversed(self.services):
            service.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Sampler:
    """Samples RSS of the named processes every 100 ms, keeping the peak."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        for p in self.procs:
            p.peak_rss = 0
            p.cpu_start = p.cpu()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in self.procs:
                p.peak_rss = max(p.peak_rss, p.rss())
            self._stop.wait(0.1)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, dict[str, float]]:
        return {
            p.name: {
                "cpu_s": round(p.cpu() - p.cpu_start, 2),
                "peak_rss_mb": round(p.peak_rss / 2**20, 1),
            }
            for p in self.procs
        }


# --- HTTP helpers -------------------------------------------------------------------------------

HTTP = urllib3.PoolManager(maxsize=16)


def api(base: str, key: str, method: str, path: str, body: Any = None) -> Any:
    response = HTTP.request(
        method,
        base + path,
        body=orjson.dumps(body) if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        retries=False,
        timeout=60,
    )
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {response.data[:500]!r}")
    return orjson.loads(response.data) if response.data else None


def sink_stats(sink: str, reset: bool = False) -> dict[str, Any]:
    return orjson.loads(HTTP.request("GET", sink + ("/reset" if reset else "/stats")).data)


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


# --- main ---------------------------------------------------------------------------------------


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
        log(f"Celery no-op: {noop_count} tasks")
        results["noop"] = measure_noop(stack, noop_count)
        log(f"  {results['noop']['rate']:.0f} tasks/s")

        web, web_port = stack.spawn_listening(
            "web",
            lambda port: [
                PY,
                "-m",
                "gunicorn",
                "webhooks_project.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
            ],
            ready="Booting worker",
        )
        base = f"http://127.0.0.1:{web_port}"
        worker = stack.spawn(
            "worker",
            [PY, "-m", "celery", "-A", "webhooks_project", "worker", "-l", "INFO"],
            ready=" ready.",
        )
        stack.spawn(
            "beat",
            [PY, "-m", "celery", "-A", "webhooks_project", "beat", "-l", "INFO"],
            ready="beat: Starting",
        )
        time.sleep(1)
        procs = [
            web,
            worker,
            stack.procs["beat"],
            stack.procs["sink"],
            *(
                Proc(name, service.proc)
                for name, service in zip(("postgres", "redis"), stack.services, strict=True)
            ),
        ]

        setup_endpoints(base, key, sink, "bench.healthy", args.fanout, 0, "ok")
        log("warm-up")
        run_throughput(
            base,
            key,
            sink,
            dsn,
            "bench.healthy",
            100,
            args.fanout,
            args.fanout,
            args.payload_bytes,
            args.batch,
            procs,
        )
        log(f"pipeline, all healthy: {events} events x {args.fanout} endpoints")
        healthy = run_throughput(
            base,
            key,
            sink,
            dsn,
            "bench.healthy",
            events,
            args.fanout,
            args.fanout,
            args.payload_bytes,
            args.batch,
            procs,
        )
        results["healthy"] = healthy
        log(f"  {healthy['rate']:.0f} deliveries/s, ingest {healthy['ingest_rate']:.0f} events/s")

        log(f"ingestion alone (worker paused): {events} events")
        results["ingest"] = measure_ingest(base, key, sink, dsn, worker, events, args, procs)
        log(f"  {results['ingest']['rate']:.0f} events/s")

        half = 0.5 * healthy["rate"] / args.fanout
        log(f"latency at half peak: {half * args.fanout:.0f} deliveries/s for {paced_seconds} s")
        results["paced"] = run_paced(
            base, key, sink, "bench.healthy", half, paced_seconds, args.payload_bytes, args.fanout
        )
        log(
            f"  p50 {results['paced']['p50_ms']:.1f} ms, p99 {results['paced']['p99_ms']:.1f} ms"
            f" (from acceptance: {results['paced']['accepted_p50_ms']:.1f} /"
            f" {results['paced']['accepted_p99_ms']:.1f} ms)"
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
                base, key, sink, event_type, half, paced_seconds, args.payload_bytes, good
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
    for name in ("healthy", "fail", "hang"):
        run = results.get(name)
        if run and run["deliveries_ok"] < run["expected_ok"]:
            problems.append(f"{name}: {run['deliveries_ok']} of {run['expected_ok']} received")
        if run and run["attempts_recorded"] < run["expected_ok"]:
            problems.append(f"{name}: {run['attempts_recorded']} attempts recorded")
    if problems:
        log("FAILED: " + "; ".join(problems))
        return 1
    if args.write:
        Path(args.write).write_text(report)
        log(f"wrote {args.write}")
    return 0


def write_section(path: str, report: str, start: str, end: str) -> None:
    """Replace the part of the file between the `start` and `end` markers (or append it)."""
    target = Path(path)
    text = target.read_text() if target.exists() else ""
    report = report.strip("\n") + "\n"
    if start in text and end in text:
        rest = text[text.index(end) + len(end) :].lstrip("\n")
        text = text[: text.index(start)] + report + ("\n" + rest if rest else "")
    else:
        text = text.rstrip() + "\n\n" + report
    target.write_text(text)


def render(r: dict[str, Any]) -> str:
    raw = r["raw"]["rate"]
    a = r["args"]
    cmd = "make bench" if not a["quick"] else "make bench-quick"
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{cmd}` (`python -m bench.run"
        + (" --quick" if a["quick"] else "")
        + f"`) on {time.strftime('%Y-%m-%d')}: {platform.platform()}, "
        f"{os.cpu_count()} CPUs, {round(psutil.virtual_memory().total / 2**30, 1)} GiB, "
        f"Python {platform.python_version()}. Everything on loopback: PostgreSQL (fsync on), "
        "Redis, gunicorn (2 processes x 4 threads), the default `celery -A webhooks_project "
        "worker`, beat, an asyncio sink, and the load generator share the machine.",
        "",
        f"Events: {a['events']}, fan-out {a['fanout']}, payload filler {a['payload_bytes']} B, "
        f"{a['batch']} events per batch POST, failing fraction {a['failing_fraction']}.",
        "Ratios are to the raw loop measured in the same run (the machines are shared and noisy).",
        "",
        "| measurement | value | ratio to raw loop |",
        "|---|---|---|",
        f"| raw loop: sign + POST, one process (the limit) | {raw:.0f} req/s | 1.00 |",
        f"| Celery no-op task on Redis (the one-task-per-message floor) | {r['noop']['rate']:.0f} tasks/s | {r['noop']['rate'] / raw:.2f} |",
    ]
    h = r["healthy"]
    lines += [
        f"| pipeline end to end, all healthy (first POST to last receipt, every attempt recorded) | {h['rate']:.0f} deliveries/s | **{h['rate'] / raw:.2f}** |",
        f"| ingestion through `POST /events/batch/`, alone (worker paused; {r['args']['batch']} events per POST, 4 clients) | {r['ingest']['rate']:.0f} events/s | — |",
        f"| ingestion through `POST /events/batch/`, during the all-healthy run | {h['ingest_rate']:.0f} events/s | — |",
        f"| latency at half peak ({r['paced']['target_rate']:.0f}/s), client's send to receipt: p50 / p99 / mean | {r['paced']['p50_ms']:.1f} / {r['paced']['p99_ms']:.1f} / {r['paced']['mean_ms']:.1f} ms | — |",
        f"| latency at half peak, service's acceptance (event `timestamp`) to receipt: p50 / p99 | {r['paced']['accepted_p50_ms']:.1f} / {r['paced']['accepted_p99_ms']:.1f} ms | — |",
    ]
    for mode, label in (("fail", "answering 500"), ("hang", "hanging past the timeout")):
        if mode not in r:
            continue
        m = r[mode]
        lines += [
            f"| {label}: healthy endpoints' throughput | {m['rate']:.0f} deliveries/s | {m['rate'] / raw:.2f} (vs all healthy: {m['rate'] / h['rate']:.2f}) |",
            f"| {label}: healthy endpoints' latency at half peak, p50 / p99 | {m['paced']['p50_ms']:.1f} / {m['paced']['p99_ms']:.1f} ms | p99 vs all healthy: {m['paced']['p99_ms'] / max(r['paced']['p99_ms'], 1e-9):.2f} |",
            f"| {label}: worker peak RSS / CPU during the burst | {m['processes']['worker']['peak_rss_mb']} MB / {m['processes']['worker']['cpu_s']} s | — |",
        ]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    pc = r["paced"]
    lines += [
        "",
        "Targets (issue 4), judged on this run:",
        "",
        "| target | this run | |",
        "|---|---|---|",
        f"| end to end >= 0.5 x raw loop | {h['rate'] / raw:.2f} x | {verdict(h['rate'] / raw >= 0.5)} |",
        f"| p99 < 100 ms at half peak (client's send to receipt) | {pc['p99_ms']:.0f} ms | {verdict(pc['p99_ms'] < 100)} |",
        f"| p50 < 20 ms at half peak (client's send to receipt) | {pc['p50_ms']:.0f} ms | {verdict(pc['p50_ms'] < 20)} |",
        f"| ingestion >= 2,000 events/s (alone) | {r['ingest']['rate']:.0f} /s | {verdict(r['ingest']['rate'] >= 2000)} |",
    ]
    for mode in ("fail", "hang"):
        if mode in r:
            m = r[mode]
            t_ok = m["rate"] * 2 >= h["rate"]
            p_ok = m["paced"]["p99_ms"] <= 2 * pc["p99_ms"]
            lines.append(
                f"| {mode}: healthy throughput and p99 within 2x of all healthy | "
                f"{h['rate'] / m['rate']:.2f}x slower, p99 {m['paced']['p99_ms'] / pc['p99_ms']:.2f}x | "
                f"{verdict(t_ok and p_ok)} |"
            )
    lines += [
        "",
        f"All-healthy burst: every one of {h['deliveries_ok']} deliveries received, "
        f"{h['attempts_recorded']} attempt rows recorded; p50 / p99 from ingest to receipt "
        f"during the burst {h['p50_ms']:.0f} / {h['p99_ms']:.0f} ms (queueing included). "
        f"Process CPU seconds and peak RSS during the burst: "
        + ", ".join(
            f"{n} {v['cpu_s']} s / {v['peak_rss_mb']} MB" for n, v in h["processes"].items()
        )
        + f"; raw loop CPU {r['raw']['cpu_seconds']:.1f} s for {r['raw']['count']} requests.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
