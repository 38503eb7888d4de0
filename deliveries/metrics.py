"""The three promised metrics, kept in a rollup the delivery path writes as it records outcomes.

- success rate: succeeded / finished deliveries (succeeded + failed + dead) in a window;
- latency to the consumer: event accepted -> the consumer's 2xx, mean and percentiles, plus
  each attempt's HTTP duration;
- failed retry count: failed attempts that were retried, and dead letters filed.

Every recording transaction adds its counts to one row per (minute, endpoint, event type) of
`DeliveryStat` and to the all-time `DeliveryTotal` row, so reading a week is a sum over at most
10,080 rows per endpoint and type however many attempts there were, and the numbers survive
`prune` deleting the attempts. Percentiles come from fixed histogram buckets (`BOUNDS_MS`),
interpolated inside the bucket: exact counts, approximate percentiles, the same trade-off as
Prometheus histograms. Means are exact.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from webhooks_project.db import binding_cursor

from .models import DeliveryStat, DeliveryTotal

# Upper bounds of the histogram buckets, in milliseconds; the last bucket is everything above.
# From a fast LAN answer to the ~30 h a delivery spends going through the whole retry schedule.
BOUNDS_MS: tuple[float, ...] = (
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
    1_800_000,
    7_200_000,
    36_000_000,
    86_400_000,
)
BUCKETS = len(BOUNDS_MS) + 1

WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
# The step of the time series for each window: 60, 96 and 84 points.
STEPS: dict[str, timedelta] = {
    "1h": timedelta(minutes=1),
    "24h": timedelta(minutes=15),
    "7d": timedelta(hours=2),
}
# Every outcome is added at each of these spans (seconds); a window reads the coarsest span that
# still draws its series, so a week is 168 hourly rows per endpoint and type, not 10,080.
SPANS = (60, 900, 3600)
WINDOW_SPANS: dict[str, int] = {"1h": 60, "24h": 900, "7d": 3600}
# How long rows of each span are kept (days); the hourly ones for WEBHOOKS_METRICS_RETENTION_DAYS.
SPAN_RETENTION_DAYS: dict[int, int] = {60: 2, 900: 14}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def bucket_index(value_ms: float) -> int:
    """The histogram bucket a value falls in: the first bound it does not exceed."""
    return bisect.bisect_left(BOUNDS_MS, value_ms)


def percentile(hist: Sequence[int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of a bucketed histogram, interpolated linearly inside its
    bucket; None when it is empty. Values in the open last bucket report its lower bound."""
    total = sum(hist)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(hist):
        if count and seen + count >= rank:
            lower = BOUNDS_MS[i - 1] if i > 0 else 0.0
            if i >= len(BOUNDS_MS):
                return float(lower)
            upper = BOUNDS_MS[i]
            return lower + (upper - lower) * max(0.0, rank - seen) / count
        seen += count
    return float(BOUNDS_MS[-1])  # pragma: no cover - the loop always returns for total > 0


def add_hists(a: Sequence[int] | None, b: Sequence[int] | None) -> list[int]:
    a, b = a or (), b or ()
    return [
        (a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0)
        for i in range(max(len(a), len(b)))
    ]


@dataclass
class Delta:
    """Counts to add for one endpoint and event type."""

    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    dead_lettered: int = 0
    attempts: int = 0
    retried: int = 0
    lost: int = 0
    attempt_ms_sum: float = 0.0
    attempt_hist: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    latency_ms_sum: float = 0.0
    latency_hist: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def attempt(self, duration_ms: float) -> None:
        self.attempts += 1
        self.attempt_ms_sum += duration_ms
        self.attempt_hist[bucket_index(duration_ms)] += 1

    def success(self, latency_ms: float) -> None:
        self.succeeded += 1
        latency_ms = max(0.0, latency_ms)
        self.latency_ms_sum += latency_ms
        self.latency_hist[bucket_index(latency_ms)] += 1


class Deltas(dict[tuple[str, str], Delta]):
    """Deltas keyed by (endpoint id, event type), filled while a batch is recorded."""

    def of(self, endpoint_id: str, event_type: str) -> Delta:
        key = (endpoint_id, event_type)
        if key not in self:
            self[key] = Delta()
        return self[key]


_COUNTERS = (
    "succeeded",
    "failed",
    "dead",
    "dead_lettered",
    "attempts",
    "retried",
    "lost",
    "attempt_ms_sum",
    "latency_ms_sum",
)
_HISTS = ("attempt_hist", "latency_hist")


def _upsert(table: str, key: Sequence[str], source: str) -> str:
    """INSERT ... SELECT from `source` (which has the key, counter and histogram columns),
    adding to the existing row on conflict (histograms element by element)."""
    columns = (*key, *_COUNTERS, *_HISTS)
    sums = ", ".join(f"{c} = cur.{c} + EXCLUDED.{c}" for c in _COUNTERS)
    # element by element, spelled out: no subquery per row
    hists = ", ".join(
        f"{h} = ARRAY["
        + ", ".join(
            f"coalesce(cur.{h}[{i}], 0) + coalesce(EXCLUDED.{h}[{i}], 0)"
            for i in range(1, BUCKETS + 1)
        )
        + "]"
        for h in _HISTS
    )
    return (
        f"INSERT INTO {table} AS cur ({', '.join(columns)}) "  # noqa: S608 - names are ours
        f"SELECT {', '.join(columns)} FROM {source} ORDER BY {', '.join(key)} "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sums}, {hists}"
    )


_INPUT_TYPES = {
    "span": "int",
    "bucket": "timestamptz",
    "endpoint_id": "text",
    "event_type": "text",
    **{c: "float8" if c.endswith("_sum") else "bigint" for c in _COUNTERS},
    **dict.fromkeys(_HISTS, "text"),  # '{1,0,...}': unnest cannot take arrays of arrays
}
# One statement, one round trip: every span's rows and the totals (from the minute rows).
_STATS_SQL = (
    "WITH v AS (SELECT span, bucket, endpoint_id, event_type, "  # noqa: S608 - names are ours
    + ", ".join(_COUNTERS)
    + ", "
    + ", ".join(f"{h}::bigint[] AS {h}" for h in _HISTS)
    + " FROM unnest("
    + ", ".join(f"%s::{t}[]" for t in _INPUT_TYPES.values())
    + f") AS x({', '.join(_INPUT_TYPES)})), "
    + "stats AS ("
    + _upsert(DeliveryStat._meta.db_table, ("span", "bucket", "endpoint_id", "event_type"), "v")
    + " RETURNING 1) "
    + _upsert(
        DeliveryTotal._meta.db_table,
        ("endpoint_id", "event_type"),
        f"v WHERE span = {SPANS[0]}",
    )
)


def minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def floor_to(at: datetime, span: int) -> datetime:
    """The start of the `span`-second bucket holding `at` (spans divide an hour)."""
    at = minute(at)
    return at.replace(minute=at.minute - at.minute % (span // 60)) if span > 60 else at


def stats_add(deltas: Deltas, *, at: datetime) -> None:
    """Add the deltas to the buckets of `at` at every span and to the totals, in the caller's
    transaction.

    Rows are written in key order (the statement sorts them) so that two transactions adding to
    the same rows lock them in the same order and never deadlock.
    """
    if not deltas:
        return
    columns: dict[str, list[Any]] = {name: [] for name in _INPUT_TYPES}
    for span in SPANS:
        bucket = floor_to(at, span)
        for (endpoint_id, event_type), d in deltas.items():
            columns["span"].append(span)
            columns["bucket"].append(bucket)
            columns["endpoint_id"].append(endpoint_id)
            columns["event_type"].append(event_type)
            for c in _COUNTERS:
                columns[c].append(getattr(d, c))
            for h in _HISTS:
                columns[h].append("{" + ",".join(map(str, getattr(d, h))) + "}")
    with binding_cursor() as cursor:
        cursor.execute(_STATS_SQL, list(columns.values()))


def stats_prune(*, batch_size: int = 10_000, max_batches: int = 100) -> int:
    """Delete rollup rows past their span's retention (minutes after 2 days, quarters after 14,
    hours after WEBHOOKS_METRICS_RETENTION_DAYS), in batches; the all-time totals stay.
    Returns how many rows were deleted."""
    now = timezone.now()
    table = DeliveryStat._meta.db_table
    deleted = 0
    for span in SPANS:
        days = SPAN_RETENTION_DAYS.get(span, settings.WEBHOOKS_METRICS_RETENTION_DAYS)
        cutoff = now - timedelta(days=days)
        for _ in range(max_batches):
            with connection.cursor() as cursor:
                cursor.execute(
                    f"DELETE FROM {table} WHERE id IN "  # noqa: S608 - the name is ours
                    f"(SELECT id FROM {table} WHERE span = %s AND bucket < %s LIMIT %s)",
                    [span, cutoff, batch_size],
                )
                deleted += cursor.rowcount
                if cursor.rowcount < batch_size:
                    break
    return deleted


# --- Reading -------------------------------------------------------------------------------------


@dataclass
class Summary(Delta):
    """The metrics over some rows of the rollup: the same counts as a delta, summed."""

    @classmethod
    def of(cls, rows: Iterable[dict[str, Any]]) -> Summary:
        summary = cls()
        for row in rows:
            summary.add(row)
        return summary

    def add(self, row: dict[str, Any]) -> None:
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + (row.get(name) or 0))
        for name in _HISTS:
            setattr(self, name, add_hists(getattr(self, name), row.get(name)))

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.dead

    @property
    def success_rate(self) -> float | None:
        return round(self.succeeded / self.finished, 6) if self.finished else None

    @property
    def latency_mean(self) -> float | None:
        return self.latency_ms_sum / self.succeeded if self.succeeded else None

    @property
    def latency_p95(self) -> float | None:
        return percentile(self.latency_hist, 0.95)

    @staticmethod
    def _distribution(count: int, total_ms: float, hist: Sequence[int]) -> dict[str, Any]:
        def q(p: float) -> float | None:
            return _rounded(percentile(hist, p))

        return {
            "count": count,
            "mean": _rounded(total_ms / count) if count else None,
            "p50": q(0.5),
            "p95": q(0.95),
            "p99": q(0.99),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "deliveries": {
                "finished": self.finished,
                "succeeded": self.succeeded,
                "failed": self.failed,
                "dead": self.dead,
                "success_rate": self.success_rate,
            },
            "latency_ms": self._distribution(
                self.succeeded, self.latency_ms_sum, self.latency_hist
            ),
            "attempt_duration_ms": self._distribution(
                self.attempts, self.attempt_ms_sum, self.attempt_hist
            ),
            "retries": {
                "failed_attempts_retried": self.retried,
                "dead_letters": self.dead_lettered,
                "attempts_lost": self.lost,
            },
        }


# sum(bigint) is numeric in PostgreSQL: cast back so Python gets ints and floats.
_SUMS = ", ".join(
    f"sum({c})::{'float8' if c.endswith('_sum') else 'bigint'} AS {c}" for c in _COUNTERS
)


@dataclass(frozen=True)
class Scope:
    """Which rows of the rollup to read."""

    since: datetime  # read from the start of the bucket holding it
    until: datetime
    endpoint_ids: Sequence[str] | None = None  # None: every endpoint
    event_type: str | None = None
    span: int = 60  # which rows: minutes, quarters or hours (SPANS)


def _where(scope: Scope) -> tuple[str, list[Any]]:
    clauses = ["span = %s", "bucket >= %s", "bucket < %s"]
    params: list[Any] = [scope.span, floor_to(scope.since, scope.span), scope.until]
    if scope.endpoint_ids is not None:
        clauses.append("endpoint_id = ANY(%s)")
        params.append(list(scope.endpoint_ids))
    if scope.event_type is not None:
        clauses.append("event_type = %s")
        params.append(scope.event_type)
    return " AND ".join(clauses), params


def _grouped(
    scope: Scope, group: str | None, group_params: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    """Sums of the rollup rows in scope, grouped by `group` (an SQL expression) or not at all.

    Two statements: the counters, then both histograms summed element-wise (unnest with
    ordinality, grouped by position), so a week of rows comes back as one row per group.
    """
    where, where_params = _where(scope)
    params = [*group_params, *where_params]
    table = DeliveryStat._meta.db_table
    g = group or "0"
    counters_sql = f"SELECT {g} AS g, {_SUMS} FROM {table} WHERE {where} GROUP BY 1"  # noqa: S608
    hists_sql = (
        f"SELECT {g} AS g, x.i, sum(x.a)::bigint, sum(x.l)::bigint "  # noqa: S608 - names are ours
        f"FROM {table}, unnest(attempt_hist, latency_hist) WITH ORDINALITY AS x(a, l, i) "
        f"WHERE {where} GROUP BY 1, 2"
    )
    with connection.cursor() as cursor:
        cursor.execute(counters_sql, params)
        names = [c.name for c in cursor.description]
        rows = {}
        for raw in cursor.fetchall():
            row = dict(zip(names, raw, strict=True))
            row["attempt_hist"] = [0] * BUCKETS
            row["latency_hist"] = [0] * BUCKETS
            rows[row["g"]] = row
        cursor.execute(hists_sql, params)
        for key, i, attempts, latencies in cursor.fetchall():
            row = rows[key]
            for name, value in (("attempt_hist", attempts), ("latency_hist", latencies)):
                hist = row[name]
                while len(hist) < i:
                    hist.append(0)
                hist[i - 1] += int(value or 0)
    return list(rows.values())


def summary(scope: Scope) -> Summary:
    rows = _grouped(scope, None)
    return Summary.of(rows)


def series(scope: Scope, step: timedelta) -> list[tuple[datetime, Summary]]:
    """The metrics per `step` from `scope.since`, every step present (empty ones too)."""
    seconds = int(step.total_seconds())
    origin = floor_to(scope.since, scope.span)
    rows = _grouped(
        scope, "floor(extract(epoch FROM bucket - %s::timestamptz) / %s)::int", (origin, seconds)
    )
    by_step = {int(row["g"]): Summary.of([row]) for row in rows}
    count = math.ceil((scope.until - origin).total_seconds() / seconds)
    return [(origin + i * step, by_step.get(i, Summary())) for i in range(count)]


def total(points: Iterable[tuple[datetime, Summary]]) -> Summary:
    """The whole window's metrics from its series (no second read of the rollup)."""
    return Summary.of(vars(s) for _, s in points)


def by_endpoint(scope: Scope) -> dict[str, Summary]:
    return {row["g"]: Summary.of([row]) for row in _grouped(scope, "endpoint_id")}


def window_scope(
    window: str,
    *,
    now: datetime | None = None,
    endpoint_ids: Sequence[str] | None = None,
    event_type: str | None = None,
) -> Scope:
    until = now or timezone.now()
    return Scope(
        since=until - WINDOWS[window],
        until=until,
        endpoint_ids=endpoint_ids,
        event_type=event_type,
        span=WINDOW_SPANS[window],
    )


def report(scope: Scope, *, window: str) -> dict[str, Any]:
    """The API's answer: the window's totals and its time series."""
    step = STEPS[window]
    points = []
    steps = series(scope, step)
    for start, s in steps:
        points.append(
            {
                "start": start,
                "succeeded": s.succeeded,
                "failed": s.failed,
                "dead": s.dead,
                "success_rate": s.success_rate,
                "latency_ms_mean": _rounded(s.latency_mean),
                "latency_ms_p95": _rounded(s.latency_p95),
                "failed_attempts_retried": s.retried,
                "dead_letters": s.dead_lettered,
            }
        )
    return {
        "window": window,
        "since": floor_to(scope.since, scope.span),
        "until": scope.until,
        **total(steps).as_dict(),
        "series": {"step_seconds": int(step.total_seconds()), "points": points},
    }
