"""Reading the metrics rollup (`deliveries.metrics`): a window's totals and its time series, per
endpoint and event type, for the API, the admin dashboard and Prometheus."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from .metrics import (
    BUCKETS,
    COUNTERS,
    HISTS,
    MAXES,
    Delta,
    add_hists,
    floor_to,
    percentile,
    rounded,
)
from .models import DeliveryStat

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
# A window reads the coarsest span of the rollup that still draws its series, so a week is 168
# hourly rows per endpoint and type, not 10,080.
WINDOW_SPANS: dict[str, int] = {"1h": 60, "24h": 900, "7d": 3600}


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
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + (row.get(name) or 0))
        for name in HISTS:
            setattr(self, name, add_hists(getattr(self, name), row.get(name)))
        for name in MAXES:
            setattr(self, name, max(getattr(self, name), row.get(name) or 0.0))

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
        return percentile(self.latency_hist, 0.95, self.latency_ms_max)

    @staticmethod
    def _distribution(
        count: int, total_ms: float, hist: Sequence[int], largest: float
    ) -> dict[str, Any]:
        def q(p: float) -> float | None:
            return rounded(percentile(hist, p, largest))

        return {
            "count": count,
            "mean": rounded(total_ms / count) if count else None,
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
                "filtered": self.filtered,
            },
            "latency_ms": self._distribution(
                self.succeeded, self.latency_ms_sum, self.latency_hist, self.latency_ms_max
            ),
            "attempt_duration_ms": self._distribution(
                self.attempts, self.attempt_ms_sum, self.attempt_hist, self.attempt_ms_max
            ),
            "retries": {
                "failed_attempts_retried": self.retried,
                "dead_letters": self.dead_lettered,
                "attempts_lost": self.lost,
            },
        }


# sum(bigint) is numeric in PostgreSQL: cast back so Python gets ints and floats.
_SUMS = ", ".join(
    [f"sum({c})::{'float8' if c.endswith('_sum') else 'bigint'} AS {c}" for c in COUNTERS]
    + [f"max({m}) AS {m}" for m in MAXES]
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
                "latency_ms_mean": rounded(s.latency_mean),
                "latency_ms_p95": rounded(s.latency_p95),
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
