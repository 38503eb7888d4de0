"""How fast the metrics answer over a million attempts: the rollup against the attempt log.

    python -m bench.metrics_read [--attempts 1000000] [--write docs/BENCHMARKS.md]

Starts a throwaway PostgreSQL and Redis, migrates, and writes a week of history in SQL: events,
deliveries and one attempt each (3% of deliveries failed or dead, with retries), spread over
`--endpoints` endpoints and `--types` event types, and the per-minute rollup of the same
attempts (`DeliveryStat`, `DeliveryTotal`), aggregated in SQL from those rows. (The delivery path
writes the rollup as it records attempts; the pipeline benchmark and the tests exercise that.)

Then it times, in process, the median of several calls of: the metrics API for each window,
the admin dashboard, the endpoint list with its health columns, and the Prometheus scrape; and,
as the baseline in the same run, the same 7-day numbers computed from the attempt log itself
(what answering without the rollup costs). With `--write`, the section between the markers in
the file is replaced (or appended).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
START, END = "<!-- metrics-read:start -->", "<!-- metrics-read:end -->"


def log(message: str) -> None:
    print(f"[metrics-read {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def timed(call: Callable[[], object], repeat: int) -> float:
    """Median milliseconds of `repeat` calls, after one warm-up call."""
    call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def seed(attempts: int, endpoints: int, types: int) -> list[str]:
    from django.db import connection

    from deliveries.metrics import BOUNDS_MS
    from deliveries.models import DeliveryStat, DeliveryTotal
    from schemas_app.models import EventType
    from webhooks.models import Endpoint

    for t in range(types):
        EventType.objects.create(name=f"bench.t{t}")
    ids = [Endpoint.objects.create(url=f"https://example.com/{n}").pk for n in range(endpoints)]
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE eps AS SELECT * FROM unnest(%s::text[]) WITH ORDINALITY AS x(id, n)",
            [ids],
        )
        log(f"seeding {attempts} events, deliveries and attempts")
        cursor.execute(
            """
            CREATE TEMP TABLE h AS
            SELECT g,
                   now() - random() * interval '7 days' AS accepted,
                   (SELECT id FROM eps WHERE n = 1 + g %% %(endpoints)s) AS endpoint_id,
                   'bench.t' || (g %% %(types)s) AS type,
                   CASE WHEN g %% 100 < 97 THEN 'succeeded'
                        WHEN g %% 100 < 99 THEN 'failed' ELSE 'dead' END AS status,
                   5 + random() * random() * 400 AS latency_ms,
                   2 + random() * random() * 200 AS duration_ms
              FROM generate_series(1, %(n)s) AS g
            """,
            {"n": attempts, "endpoints": endpoints, "types": types},
        )
        cursor.execute(
            """
            INSERT INTO deliveries_event (id, type, data, occurred_at, created_at)
            SELECT 'evt_b' || g, type, '{}'::jsonb, accepted, accepted FROM h;
            INSERT INTO deliveries_delivery (id, event_id, endpoint_id, status, attempt_count,
                   retry_base, last_status_code, completed_at, created_at)
            SELECT g, 'evt_b' || g, endpoint_id, status, 1, 0,
                   CASE status WHEN 'succeeded' THEN 200 ELSE 500 END,
                   accepted + latency_ms * interval '1 millisecond', accepted FROM h;
            INSERT INTO deliveries_deliveryattempt (delivery_id, number, outcome, started_at,
                   duration_ms, status_code, error, error_class, request_headers,
                   response_headers, response_body, request_body)
            SELECT g, 1, CASE status WHEN 'succeeded' THEN 'succeeded'
                                     WHEN 'dead' THEN 'failed' ELSE 'retrying' END,
                   accepted + (latency_ms - duration_ms) * interval '1 millisecond',
                   duration_ms, CASE status WHEN 'succeeded' THEN 200 ELSE 500 END,
                   '', '', '{}'::jsonb, '{}'::jsonb, '', '' FROM h;
            """
        )
        bounds = "ARRAY[" + ",".join(str(b) for b in BOUNDS_MS) + "]::float8[]"

        def hist(column: str) -> str:
            counts = ", ".join(
                f"count(*) FILTER (WHERE width_bucket({column}, {bounds}) = {i})"
                for i in range(len(BOUNDS_MS) + 1)
            )
            return f"ARRAY[{counts}]::bigint[]"

        log("aggregating the rollup")
        stat = DeliveryStat._meta.db_table
        quarter = (
            "date_trunc('hour', accepted) + "
            "floor(extract(minute FROM accepted) / 15) * interval '15 minutes'"
        )
        # as the prune job leaves them: minutes for 2 days, quarters and hours for the week
        for table, span, bucket, where in (
            (stat, 60, "date_trunc('minute', accepted)", "accepted > now() - interval '2 days'"),
            (stat, 900, quarter, "true"),
            (stat, 3600, "date_trunc('hour', accepted)", "true"),
            (DeliveryTotal._meta.db_table, None, None, "true"),
        ):
            bucket_column = "span, bucket, " if span else ""
            key = f"{span}, {bucket}, " if span else ""
            group = f"{bucket}, " if span else ""
            cursor.execute(
                f"""
                INSERT INTO {table} ({bucket_column}endpoint_id, event_type, succeeded, failed,
                       dead, dead_lettered, attempts, retried, attempt_ms_sum, attempt_hist,
                       latency_ms_sum, latency_hist)
                SELECT {key}endpoint_id, type,
                       count(*) FILTER (WHERE status = 'succeeded'),
                       count(*) FILTER (WHERE status = 'failed'),
                       count(*) FILTER (WHERE status = 'dead'),
                       count(*) FILTER (WHERE status <> 'succeeded'),
                       count(*), count(*) FILTER (WHERE status <> 'succeeded'),
                       sum(duration_ms), {hist("duration_ms")},
                       coalesce(sum(latency_ms) FILTER (WHERE status = 'succeeded'), 0),
                       {hist("CASE WHEN status = 'succeeded' THEN latency_ms END")}
                  FROM h WHERE {where} GROUP BY {group}endpoint_id, type
                """  # noqa: S608 - our own names
            )
        cursor.execute("ANALYZE")
    log(f"rollup rows: {DeliveryStat.objects.count()}")
    return ids


# The same 7-day numbers as the API's summary, straight from the attempt log.
BASELINE_SQL = """
WITH d AS (
  SELECT d.status, d.completed_at, e.created_at AS accepted
    FROM deliveries_delivery d JOIN deliveries_event e ON e.id = d.event_id
   WHERE d.completed_at >= now() - interval '7 days'
     AND d.status IN ('succeeded', 'failed', 'dead')
), a AS (
  SELECT a.outcome, a.duration_ms, a.started_at, e.created_at AS accepted
    FROM deliveries_deliveryattempt a
    JOIN deliveries_delivery d ON d.id = a.delivery_id
    JOIN deliveries_event e ON e.id = d.event_id
   WHERE a.started_at >= now() - interval '7 days'
)
SELECT (SELECT count(*) FILTER (WHERE status = 'succeeded')::float / nullif(count(*), 0) FROM d),
       (SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY
               extract(epoch FROM started_at - accepted) * 1000 + duration_ms)
          FROM a WHERE outcome = 'succeeded'),
       (SELECT avg(extract(epoch FROM started_at - accepted) * 1000 + duration_ms)
          FROM a WHERE outcome = 'succeeded'),
       (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FROM a),
       (SELECT count(*) FROM a WHERE outcome = 'retrying')
"""


def measure(endpoint_ids: list[str], repeat: int) -> dict[str, float]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from webhooks.services import api_key_create

    _, key = api_key_create(name="bench", scopes=["read"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    admin = Client()
    admin.force_login(
        get_user_model().objects.create_superuser("bench", "b@example.com", "bench-password")
    )

    def get(client: Client, url: str) -> Callable[[], object]:
        def call() -> object:
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
            return response

        return call

    def baseline() -> None:
        with connection.cursor() as cursor:
            cursor.execute(BASELINE_SQL)
            cursor.fetchall()

    one = endpoint_ids[0]
    return {
        "baseline": timed(baseline, max(3, repeat // 2)),
        "api_7d": timed(get(api, "/api/v1/metrics/?window=7d"), repeat),
        "api_24h": timed(get(api, "/api/v1/metrics/?window=24h"), repeat),
        "api_1h": timed(get(api, "/api/v1/metrics/?window=1h"), repeat),
        "api_7d_endpoint": timed(get(api, f"/api/v1/metrics/?window=7d&endpoint={one}"), repeat),
        "dashboard_7d": timed(get(admin, "/admin/metrics/?window=7d"), repeat),
        "endpoint_list": timed(get(admin, "/admin/webhooks/endpoint/"), repeat),
        "prometheus": timed(get(Client(REMOTE_ADDR="127.0.0.1"), "/metrics"), repeat),
    }


def render(args: argparse.Namespace, results: dict[str, float], rollup_rows: int) -> str:
    base = results["baseline"]

    def row(label: str, name: str) -> str:
        return f"| {label} | {results[name]:.1f} ms | {base / results[name]:.0f}x faster |"

    lines = [
        START,
        "## Reading the metrics over a million attempts",
        "",
        f"Produced by `python -m bench.metrics_read --attempts {args.attempts}` (part of "
        f"`make bench`) on {datetime.now(UTC):%Y-%m-%d}: {platform.platform()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}. A week of history: "
        f"{args.attempts:,} deliveries with one attempt each over {args.endpoints} endpoints "
        f"and {args.types} event types, and its rollup as the prune job leaves it (minute rows "
        f"for 2 days, quarter-hour and hourly rows for the week: {rollup_rows:,} rows). "
        "Median of several calls, in process (Django test client, no network).",
        "",
        "| measurement | time | against the baseline |",
        "|---|---|---|",
        f"| baseline: the 7-day success rate, latency percentiles and retries computed from "
        f"the attempt log (SQL) | {base:.1f} ms | 1x |",
        row("`GET /api/v1/metrics/?window=7d` (totals and 84-point series)", "api_7d"),
        row("`GET /api/v1/metrics/?window=24h`", "api_24h"),
        row("`GET /api/v1/metrics/?window=1h`", "api_1h"),
        row("`GET /api/v1/metrics/?window=7d&endpoint=...`", "api_7d_endpoint"),
        row("admin dashboard, 7 days (cards, 3 charts, endpoint table)", "dashboard_7d"),
        row("admin endpoint list with its 24 h health columns", "endpoint_list"),
        row("Prometheus scrape `/metrics`", "prometheus"),
        END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_read")
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--types", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--write", default=None)
    args = parser.parse_args(argv)

    os.environ.setdefault("WEBHOOKS_ENV", "dev")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    sys.path.insert(0, str(BASE_DIR))
    from devstack.services import start_services, stop_services

    tmp = Path(tempfile.mkdtemp(prefix="metrics-read-"))
    tmp.chmod(0o755)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    services = start_services(tmp, fast=True, persist=False)
    try:
        import django

        django.setup()
        from django.core.management import call_command

        from deliveries.models import DeliveryStat

        call_command("migrate", verbosity=0)
        ids = seed(args.attempts, args.endpoints, args.types)
        results = measure(ids, args.repeat)
        report = render(args, results, DeliveryStat.objects.count())
    finally:
        from django.db import connections

        connections.close_all()
        stop_services(services)
        shutil.rmtree(tmp, ignore_errors=True)
    print(report)
    if args.write:
        from bench.report import write_section

        write_section(args.write, report, START, END)
        log(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
