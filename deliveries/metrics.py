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
from collections.abc import Sequence
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

# Every outcome is added at each of these spans (seconds); a window reads the coarsest span that
# still draws its series, so a week is 168 hourly rows per endpoint and type, not 10,080.
SPANS = (60, 900, 3600)
# How long rows of each span are kept (days); the hourly ones for WEBHOOKS_METRICS_RETENTION_DAYS.
SPAN_RETENTION_DAYS: dict[int, int] = {60: 2, 900: 14}


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def bucket_index(value_ms: float) -> int:
    """The histogram bucket a value falls in: the first bound it does not exceed."""
    return bisect.bisect_left(BOUNDS_MS, value_ms)


def percentile(hist: Sequence[int], q: float, largest: float = 0.0) -> float | None:
    """The q-quantile (0 < q <= 1) of a bucketed histogram, interpolated linearly inside its
    bucket, and never above `largest`, the largest value recorded (0: not known); None when it
    is empty. Values in the open last bucket report its lower bound. Without the cap, a p99 in
    the 60-300 s bucket read up to 300 s when the slowest delivery took 96 s."""
    total = sum(hist)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    value = float(BOUNDS_MS[-1])
    for i, count in enumerate(hist):
        if count and seen + count >= rank:
            lower = BOUNDS_MS[i - 1] if i > 0 else 0.0
            if i >= len(BOUNDS_MS):
                value = float(lower)
            else:
                upper = BOUNDS_MS[i]
                value = lower + (upper - lower) * max(0.0, rank - seen) / count
            break
        seen += count
    return min(value, largest) if largest > 0 else value


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
    filtered: int = 0
    attempt_ms_sum: float = 0.0
    attempt_hist: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    latency_ms_sum: float = 0.0
    latency_hist: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    attempt_ms_max: float = 0.0
    latency_ms_max: float = 0.0

    def attempt(self, duration_ms: float) -> None:
        self.attempts += 1
        self.attempt_ms_sum += duration_ms
        self.attempt_hist[bucket_index(duration_ms)] += 1
        self.attempt_ms_max = max(self.attempt_ms_max, duration_ms)

    def success(self, latency_ms: float) -> None:
        self.succeeded += 1
        latency_ms = max(0.0, latency_ms)
        self.latency_ms_sum += latency_ms
        self.latency_hist[bucket_index(latency_ms)] += 1
        self.latency_ms_max = max(self.latency_ms_max, latency_ms)


class Deltas(dict[tuple[str, str], Delta]):
    """Deltas keyed by (endpoint id, event type), filled while a batch is recorded."""

    def of(self, endpoint_id: str, event_type: str) -> Delta:
        key = (endpoint_id, event_type)
        if key not in self:
            self[key] = Delta()
        return self[key]


COUNTERS = (
    "succeeded",
    "failed",
    "dead",
    "dead_lettered",
    "attempts",
    "retried",
    "lost",
    "filtered",
    "attempt_ms_sum",
    "latency_ms_sum",
)
HISTS = ("attempt_hist", "latency_hist")
MAXES = ("attempt_ms_max", "latency_ms_max")


def _upsert(table: str, key: Sequence[str], source: str) -> str:
    """INSERT ... SELECT from `source` (which has the key, counter and histogram columns),
    adding to the existing row on conflict (histograms element by element)."""
    columns = (*key, *COUNTERS, *MAXES, *HISTS)
    sums = ", ".join(
        [f"{c} = cur.{c} + EXCLUDED.{c}" for c in COUNTERS]
        + [f"{m} = GREATEST(cur.{m}, EXCLUDED.{m})" for m in MAXES]
    )
    # element by element, spelled out: no subquery per row
    hists = ", ".join(
        f"{h} = ARRAY["
        + ", ".join(
            f"coalesce(cur.{h}[{i}], 0) + coalesce(EXCLUDED.{h}[{i}], 0)"
            for i in range(1, BUCKETS + 1)
        )
        + "]"
        for h in HISTS
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
    **{c: "float8" if c.endswith("_sum") else "bigint" for c in COUNTERS},
    **dict.fromkeys(MAXES, "float8"),
    **dict.fromkeys(HISTS, "text"),  # '{1,0,...}': unnest cannot take arrays of arrays
}
# One statement, one round trip: every span's rows and the totals (from the minute rows).
_STATS_SQL = (
    "WITH v AS (SELECT span, bucket, endpoint_id, event_type, "  # noqa: S608 - names are ours
    + ", ".join((*COUNTERS, *MAXES))
    + ", "
    + ", ".join(f"{h}::bigint[] AS {h}" for h in HISTS)
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
            for c in (*COUNTERS, *MAXES):
                columns[c].append(getattr(d, c))
            for h in HISTS:
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
