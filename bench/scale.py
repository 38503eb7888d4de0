"""`make bench`'s scale check: the same stack on an empty database and on a month of rows.

It starts the stack, measures the API's list routes and an end-to-end burst on the empty
database, then fills it by SQL with `--events` events over 40 days (a delivery per endpoint
each, one attempt per delivery, a dead letter for one delivery in a hundred), ANALYZEs, and
measures the same again. Every figure is reported as a ratio to the empty database of the same
run (issue 14's targets: lists <= 2x and under 200 ms; throughput >= 0.9x).

Run: python -m bench.scale [--events 500000] [--fanout 10] [--burst 3000] [--paced 60]
     [--write FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.fill import FILLED, fill_month
from bench.report import write_section
from bench.scenarios import post_batches, run_paced, setup_endpoints
from bench.stack import HTTP, PY, Stack, api, log, sink_stats
from devstack.process import BASE_DIR

NOTE = (
    "Both phases come after a warm-up (a burst, and one GET of every route and admin page), so "
    "the empty column does not pay the web processes' first requests. The paced rows offer the "
    "same load in both phases: half the empty database's burst rate. The admin pages are read "
    "with a staff session; each beat job is the median of 5 runs in one process. "
    "`tests/deliveries/test_pagination.py` checks the plans of the same queries (no sequential "
    "scan of a big table, no unbounded count)."
)
SEED_EVENTS = 1000
START = "<!-- scale:start -->"
END = "<!-- scale:end -->"
EVENT_TYPE = "bench.scale"
TENANT_TYPE = "bench.tenant"  # the portal's tenant's events (not in the bursts)


def fill(dsn: str, events: int, **month: Any) -> float:
    """The month of rows, by SQL (bench/fill.py); returns the seconds it took. The portal's
    tenant gets a tenth as many events of its own type on its endpoint."""
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for event_type, count in ((EVENT_TYPE, events), (TENANT_TYPE, max(1, events // 10))):
            endpoints = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM webhooks_endpoint WHERE %s = ANY(event_types) ORDER BY id",
                    [event_type],
                )
            ]
            options = dict(month)
            if event_type == TENANT_TYPE:  # its own rows, found again by their own marker
                options["marker"] = f"{month.get('marker', FILLED)}-tenant"
            fill_month(
                conn,
                endpoints=endpoints,
                event_type=event_type,
                events=count,
                log=log,
                **options,
            )
        # the fill's gigabytes of dirty pages written out now, not during the measurements
        # (an installation that grew over a month has no bulk load behind it)
        conn.execute("CHECKPOINT")
    return time.monotonic() - started


SESSION = """
from importlib import import_module
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
user, _ = get_user_model().objects.get_or_create(
    username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
)
store = import_module(settings.SESSION_ENGINE).SessionStore()
store[SESSION_KEY] = str(user.pk)
store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
store[HASH_SESSION_KEY] = user.get_session_auth_hash()
store.create()
print(settings.SESSION_COOKIE_NAME + "=" + store.session_key)
"""

# The partner portal of a tenant with one endpoint of its own and a tenth as many events as
# the others (filled by `fill`, never sent: port 9 and no traffic of its type): a session
# opened as a link opens one, its cookie printed.
PORTAL = """
from portal.services import access_create, access_redeem
from schemas_app.services import event_type_create
from webhooks.models import Application
from webhooks.services import endpoint_create
event_type_create(name="bench.tenant", schema={"type": "object"})
app = Application.objects.create(uid="bench-tenant", name="Bench tenant")
endpoint_create(url="http://127.0.0.1:9/tenant", application=app, event_types=["bench.tenant"])
made = access_create(application=app, rights="read", actor="bench")
print("webhooks_portal=" + access_redeem(token=made.token, client="bench").session_key)
"""


def portal_routes(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        endpoint = conn.execute(
            "SELECT e.id FROM webhooks_endpoint e JOIN webhooks_application a"
            " ON a.id = e.application_id WHERE a.uid = 'bench-tenant'"
        ).fetchone()[0]
        delivery = conn.execute(
            "SELECT max(id) FROM deliveries_delivery WHERE endpoint_id = %s", [endpoint]
        ).fetchone()[0]
    return {
        "portal: overview (24 h)": "/portal/",
        "portal: overview (7 d)": "/portal/?window=7d",
        "portal: deliveries": "/portal/deliveries/",
        "portal: deliveries, dead": "/portal/deliveries/?status=dead",
        "portal: deliveries, page 3": "/portal/deliveries/?page=3",
        "portal: an endpoint": f"/portal/endpoints/{endpoint}/",
        "portal: a delivery": f"/portal/deliveries/{delivery}/",
        "portal: dead letters": "/portal/dead-letters/",
    }


JOBS = """
import json, time
from deliveries.services.endpoints import endpoints_disable_failing
from deliveries.services.retention import events_prune
from deliveries.services.sweeper import deliveries_requeue_stuck
out = {}
for name, job in (("sweeper", deliveries_requeue_stuck), ("health job", endpoints_disable_failing),
                  ("row-by-row prune", events_prune)):
    times = []
    for _ in range(5):
        started = time.perf_counter()
        job()
        times.append((time.perf_counter() - started) * 1000)
    out[name] = sorted(times)[2]
print(json.dumps(out))
"""


def manage_shell(stack: Stack, code: str, **env: str) -> str:
    """The last line `code` prints, run by `manage.py shell` with the stack's settings."""
    return (
        subprocess.run(
            [PY, "manage.py", "shell", "-c", code],
            cwd=BASE_DIR,
            env={**stack.env, **env},
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )


def admin_routes(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        endpoint = conn.execute("SELECT min(id) FROM webhooks_endpoint").fetchone()[0]
        delivery = conn.execute("SELECT max(id) FROM deliveries_delivery").fetchone()[0]
    return {
        "admin: events": "/admin/deliveries/event/",
        "admin: deliveries": "/admin/deliveries/delivery/",
        "admin: deliveries, dead": "/admin/deliveries/delivery/?status__exact=dead",
        "admin: deliveries of an endpoint": f"/admin/deliveries/delivery/?endpoint__id__exact={endpoint}",
        "admin: a delivery's page": f"/admin/deliveries/delivery/{delivery}/change/",
        "admin: dead letters": "/admin/deliveries/deadletter/",
        "admin: dashboard (24 h)": "/admin/metrics/",
    }


RETAIN = """
import json, time
from deliveries.services.partitions import partitions_expire
started = time.monotonic()
done = partitions_expire()
done["seconds"] = time.monotonic() - started
print(json.dumps(done))
"""


def retention(stack: Stack, dsn: str, ingest_rate: float) -> dict[str, Any]:
    """Retention (WEBHOOKS_RETENTION_DAYS=30) over the filled month, with the stack running:
    how fast it removes against the ingest rate, and whether the disk comes back (the size
    after against the size before less the partitions that go)."""
    cutoff = datetime.now(UTC) - timedelta(days=30)
    with psycopg.connect(dsn) as conn:
        parts = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = ANY(%s::regclass[])",
            [["deliveries_event", "deliveries_delivery", "deliveries_deliveryattempt"]],
        ).fetchall()
        before = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        rows_before = conn.execute("SELECT count(*) FROM deliveries_delivery").fetchone()[0]
    going = 0
    for name, size in parts:
        day = name.rpartition("_p")[2]
        if day.isdigit():
            start = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)
            if start + timedelta(days=1) <= cutoff:
                going += size
    done = json.loads(manage_shell(stack, RETAIN, WEBHOOKS_RETENTION_DAYS="30"))
    with psycopg.connect(dsn) as conn:
        after = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        rows_after = conn.execute("SELECT count(*) FROM deliveries_delivery").fetchone()[0]
    return {
        **done,
        "deliveries_removed": rows_before - rows_after,
        "events_per_second": done["events_dropped"] / max(done["seconds"], 1e-6),
        "vs_ingest": done["events_dropped"] / max(done["seconds"], 1e-6) / ingest_rate,
        "mb_before": before / 2**20,
        "mb_going": going / 2**20,
        "mb_after": after / 2**20,
        "after_vs_expected": after / max(before - going, 1),
    }


def sizes(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        rows = {
            t: conn.execute(f"SELECT count(*) FROM deliveries_{t}").fetchone()[0]  # noqa: S608
            for t in ("event", "delivery", "deliveryattempt")
        }
        total = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"rows": rows, "database_mb": round(total / 2**20)}


def routes(base: str, key: str, dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        endpoint = conn.execute("SELECT min(id) FROM webhooks_endpoint").fetchone()[0]
        delivery = conn.execute("SELECT max(id) FROM deliveries_delivery").fetchone()[0]
    second = api(base, key, "GET", "/api/v1/deliveries/?page_size=50")["next"] or ""
    return {
        "events": "/api/v1/events/",
        "events by type": f"/api/v1/events/?type={EVENT_TYPE}",
        "deliveries": "/api/v1/deliveries/",
        "deliveries, next page": second[second.index("/api/") :] if second else "",
        "deliveries by endpoint": f"/api/v1/deliveries/?endpoint={endpoint}",
        "deliveries by status (dead)": "/api/v1/deliveries/?status=dead",
        "attempts of a delivery": f"/api/v1/deliveries/{delivery}/attempts/",
        "dead letters": "/api/v1/dead-letters/",
        "audit records": "/api/v1/audit-records/",
        "metrics, 24h": "/api/v1/metrics/?window=24h",
        "metrics, 7d": "/api/v1/metrics/?window=7d",
        "/metrics (Prometheus)": "/metrics",
    }


def time_routes(
    base: str, headers: dict[str, str], paths: dict[str, str], repeat: int
) -> dict[str, float]:
    """The median milliseconds of `repeat` GETs of each route (after one warm-up GET)."""
    out = {}
    for name, path in paths.items():
        if not path:
            continue
        times = []
        for i in range(repeat + 1):
            started = time.perf_counter()
            response = HTTP.request("GET", base + path, headers=headers, timeout=60)
            if response.status >= 300:
                raise RuntimeError(f"GET {path}: {response.status} {response.data[:300]!r}")
            if i:
                times.append((time.perf_counter() - started) * 1000)
        out[name] = statistics.median(times)
    return out


def burst(base: str, key: str, sink: str, dsn: str, events: int, fanout: int) -> dict[str, float]:
    """`events` x `fanout` deliveries through the batch API; first POST to every attempt
    recorded (attempts counted above the id where the burst started: no count of the table)."""
    sink_stats(sink, reset=True)
    with psycopg.connect(dsn) as conn:
        floor = conn.execute("SELECT coalesce(max(id), 0) FROM deliveries_deliveryattempt")
        start_id = floor.fetchone()[0]
    first, ingest = post_batches(base, key, EVENT_TYPE, events, 100, 256)
    expected = events * fanout
    deadline = time.monotonic() + max(120, expected / 50)
    recorded = 0
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as conn:
            recorded = conn.execute(
                "SELECT count(*) FROM deliveries_deliveryattempt WHERE id > %s", [start_id]
            ).fetchone()[0]
        if recorded >= expected:
            break
        time.sleep(0.2)
    seconds = time.time() - first
    stats = sink_stats(sink)
    return {
        "deliveries_ok": stats["ok"],
        "recorded": recorded,
        "rate": stats["ok"] / seconds,
        "ingest_rate": events / ingest,
    }


def render(args: argparse.Namespace, r: dict[str, Any]) -> str:
    empty, month = r["empty"], r["month"]
    lines = [
        START,
        "## A month of rows (issue 14): the same stack, empty and full",
        "",
        f"`python -m bench.scale --events {args.events} --fanout {args.fanout} --burst "
        f"{args.burst}` on {time.strftime('%Y-%m-%d')}: the bench stack (DEBUG off, fsync on), "
        f"{args.fanout} endpoints. Filled by SQL in {r['fill_seconds']:.0f} s: "
        f"{month['size']['rows']['event']:,} events, {month['size']['rows']['delivery']:,} "
        f"deliveries, {month['size']['rows']['deliveryattempt']:,} attempts over 40 days; "
        f"database {empty['size']['database_mb']:,} MB empty, {month['size']['database_mb']:,} MB "
        "full. Each route: the median of "
        f"{args.repeat} GETs.",
        "",
        f'The baseline ("empty") holds {SEED_EVENTS:,} events of the last hour, a delivery '
        "per endpoint each and one in ten of them dead, so every list has a full page there too.",
        "",
        "| measurement | empty | a month of rows | ratio |",
        "|---|---|---|---|",
    ]
    for name, ms in month["routes"].items():
        before = empty["routes"].get(name)
        ratio = f"{ms / before:.2f}" if before else "—"
        lines.append(f"| `GET` {name} | {before or 0:.1f} ms | {ms:.1f} ms | {ratio} |")
    for name, ms in month["jobs"].items():
        before = empty["jobs"][name]
        lines.append(f"| beat job: {name} | {before:.1f} ms | {ms:.1f} ms | {ms / before:.2f} |")
    for key, label in (("rate", "end to end, deliveries/s"), ("ingest_rate", "ingest, events/s")):
        a, b = empty["burst"][key], month["burst"][key]
        lines.append(f"| burst of {args.burst} events: {label} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        a, b = empty["paced"][key], month["paced"][key]
        lines.append(
            f"| at half the empty peak ({empty['paced']['target_rate']:.0f} deliveries/s for "
            f"{args.paced:.0f} s): {label} ingest to receipt | {a:.0f} ms | {b:.0f} ms | "
            f"{b / a:.2f} |"
        )
    rows = month["size"]["rows"]
    per_delivery = month["size"]["database_mb"] * 2**20 / max(rows["delivery"], 1)
    lines += [
        "",
        f"Stored per delivery (the whole database over its deliveries, with their events, one "
        f"attempt each, 200-byte payloads and a 300-byte body kept once): **{per_delivery:,.0f} "
        f"bytes**, i.e. {per_delivery * 1e6 / 2**30:,.2f} GB per million deliveries.",
    ]
    ret = r["retention"]
    lines += [
        "",
        "Retention then ran once (`partitions_expire`, WEBHOOKS_RETENTION_DAYS=30) with the "
        f"stack up: {ret['days']} days dropped in {ret['seconds']:.2f} s, "
        f"{ret['events_dropped']:,} events and {ret['deliveries_removed']:,} deliveries with "
        f"their attempts ({ret['events_kept']:,} events kept, still owed): "
        f"{ret['events_per_second']:,.0f} events/s, **{ret['vs_ingest']:,.0f}x** the ingest "
        f"rate of the burst above. Database {ret['mb_before']:,.0f} MB before, "
        f"{ret['mb_after']:,.0f} MB after; the partitions dropped held {ret['mb_going']:,.0f} MB, "
        f"so the size after is **{ret['after_vs_expected']:.3f}x** what the remaining rows "
        "occupied before: the disk came back at once.",
        "",
        NOTE,
        "",
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--fanout", type=int, default=10)
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--paced", type=float, default=60.0, help="seconds of paced traffic")
    parser.add_argument("--write", default=None)
    args = parser.parse_args(argv)
    stack = Stack.create("webhooks-scale-")  # DEBUG off, fsync on
    results: dict[str, Any] = {}
    try:
        dsn, key = stack.start_data()
        sink = stack.start_sink()
        _, base = stack.serve_web("web", workers=2, threads=4)
        celery = [PY, "-m", "celery", "-A", "webhooks_project"]
        stack.spawn("worker", [*celery, "worker", "-l", "INFO"], ready=" ready.")
        stack.spawn("beat", [*celery, "beat", "-l", "INFO"], ready="beat: Starting")
        setup_endpoints(base, key, sink, EVENT_TYPE, args.fanout, 0, "ok")
        bearer = {"Authorization": f"Bearer {key}"}
        cookie = {"Cookie": manage_shell(stack, SESSION)}
        partner = {"Cookie": manage_shell(stack, PORTAL)}
        # the baseline is not quite empty: an hour of rows, a page of every list (dead ones
        # included), so that both phases render full pages and only the month differs
        fill(dsn, SEED_EVENTS, days=0.04, dead_every=10, marker="seed")
        log("warm-up: a burst and every route")
        burst(base, key, sink, dsn, 200, args.fanout)
        time_routes(base, bearer, routes(base, key, dsn), 1)
        time_routes(base, cookie, admin_routes(dsn), 1)
        time_routes(base, partner, portal_routes(dsn), 1)
        for phase in ("empty", "month"):
            if phase == "month":
                log(f"filling {args.events} events x {args.fanout} endpoints")
                results["fill_seconds"] = fill(dsn, args.events)
            log(f"{phase}: list routes, admin pages, beat jobs")
            timed = time_routes(base, bearer, routes(base, key, dsn), args.repeat)
            timed.update(time_routes(base, cookie, admin_routes(dsn), args.repeat))
            timed.update(time_routes(base, partner, portal_routes(dsn), args.repeat))
            results[phase] = {"routes": timed, "jobs": json.loads(manage_shell(stack, JOBS))}
            log(f"{phase}: burst")
            results[phase]["burst"] = burst(base, key, sink, dsn, args.burst, args.fanout)
            # the same offered load in both phases: half the empty database's peak
            rate = results["empty"]["burst"]["rate"] / 2 / args.fanout
            log(f"{phase}: paced at {rate:.0f} events/s for {args.paced:.0f} s")
            results[phase]["paced"] = run_paced(
                base, key, sink, EVENT_TYPE, rate, args.paced, 200, args.fanout, dsn
            )
            results[phase]["size"] = sizes(dsn)
        log("retention")
        results["retention"] = retention(stack, dsn, results["month"]["burst"]["ingest_rate"])
    finally:
        stack.close()
    report = render(args, results)
    print(report)
    if args.write:
        write_section(args.write, report, START, END)
        log(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
