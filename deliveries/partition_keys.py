"""Where a row goes among the day partitions (pure: the bounds, the DDL; no database here).

A day is a UTC day. Events are partitioned by id (time-ordered, "C" collation), deliveries by an
id that carries the day of their event, `(day << DAY_SHIFT) + a sequence`, and attempts by
their delivery's id on the same bounds. `deliveries.services.partitions` runs the DDL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from webhooks_project.identifiers import id_floor, id_millis

EPOCH = date(2025, 1, 1)  # day 0 of delivery ids
EPOCH_UNIX_DAY = 20089  # EPOCH in days since 1970-01-01
# (day << 39) + sequence stays below 2**53, exact as a JSON number, until 2069; each day has
# room for 2**39 sequence values, and the sequence is shared: 5 * 10**11 deliveries in all.
DAY_SHIFT = 39
DELIVERY_SEQUENCE = "deliveries_delivery_id_seq"
EVENTS = "deliveries_event"
DELIVERIES = "deliveries_delivery"
ATTEMPTS = "deliveries_deliveryattempt"
_SAFE = re.compile(r"[A-Za-z0-9_]+")
LEGACY_END = 1 << DAY_SHIFT  # delivery ids from before partitioning are all below this


def day_number(day: date) -> int:
    return (day - EPOCH).days


def event_day(event_id: str) -> int:
    """The day number of an event id (0, the legacy range, for an id `new_id` did not make)."""
    millis = id_millis(event_id)
    if millis is None:
        return 0
    return max(0, day_number(datetime.fromtimestamp(millis / 1000, UTC).date()))


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(frozen=True)
class DayBounds:
    day: date
    events: tuple[str, str]
    deliveries: tuple[int, int]

    @property
    def suffix(self) -> str:
        return f"p{self.day:%Y%m%d}"


def bounds(day: date) -> DayBounds:
    millis = [int((day_start(day) + timedelta(days=n)).timestamp() * 1000) for n in (0, 1)]
    number = day_number(day)
    return DayBounds(
        day=day,
        events=(id_floor("evt", millis[0]), id_floor("evt", millis[1])),
        deliveries=(number << DAY_SHIFT, (number + 1) << DAY_SHIFT),
    )


def _literal(value: str | int) -> str:
    """A bound as SQL: DDL takes no parameters. Ours are integers and base62 ids."""
    if isinstance(value, int):
        return str(value)
    if not _SAFE.fullmatch(value):
        raise ValueError(f"not an id: {value!r}")
    return f"'{value}'"


def day_ddl(day: date) -> list[str]:
    """The statements that make `day`'s three partitions and its deliveries' unique index."""
    b = bounds(day)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {EVENTS}_{b.suffix} PARTITION OF {EVENTS} "
        f"FOR VALUES FROM ({_literal(b.events[0])}) TO ({_literal(b.events[1])})"
    ]
    for table in (DELIVERIES, ATTEMPTS):
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {table}_{b.suffix} PARTITION OF {table} "
            f"FOR VALUES FROM ({_literal(b.deliveries[0])}) TO ({_literal(b.deliveries[1])})"
        )
    statements.append(
        f"CREATE UNIQUE INDEX IF NOT EXISTS {DELIVERIES}_{b.suffix}_event_endpoint "
        f"ON {DELIVERIES}_{b.suffix} (event_id, endpoint_id)"
    )
    return statements


def delivery_id_span(event_ids: Iterable[str]) -> tuple[int, int]:
    """The range of delivery ids the deliveries of these events have (their events' days):
    with it, a lookup by event reads those days' partitions, not every one. Deliveries from
    before partitioning are below LEGACY_END, whatever their event."""
    days = [event_day(event_id) for event_id in event_ids] or [0]
    return min(days) << DAY_SHIFT, (max(days) + 1) << DAY_SHIFT


def event_id_at(moment: datetime) -> str:
    """The smallest event id made at `moment`, less a second: ids and `created_at` are taken
    a moment apart, so a range of ids from here holds every event accepted since `moment`."""
    return id_floor("evt", int(moment.timestamp() * 1000) - 1000)


def delivery_id_floor(moment: datetime) -> int:
    """Where the delivery ids of events accepted on `moment`'s day start."""
    return day_number(moment.astimezone(UTC).date()) << DAY_SHIFT


def id_span(delivery_ids: Iterable[int]) -> dict[str, int]:
    """`low` and `high` around these delivery ids: with them in a query's WHERE, an UPDATE
    joined to a list of ids is planned against those days' partitions, not every one."""
    ids = list(delivery_ids) or [0]
    return {"low": min(ids), "high": max(ids) + 1}


def claim_bounds(delivery_ids: Iterable[int]) -> dict[str, int | str]:
    """Bounds a query by delivery ids can add so that it is planned against the partitions of
    those days only, for the deliveries and for their events (a day to either side: a delivery
    made by hand, not by `deliveries_insert`, carries the day it was made). Planning a join of
    two partitioned tables costs a millisecond per handful of partitions otherwise."""
    ids = list(delivery_ids) or [0]
    low, high = min(ids), max(ids) + 1
    if low < LEGACY_END:  # from before partitioning: their events may be of any day
        return {"low": low, "high": high, "first_event": "", "after_event": "~"}
    first = EPOCH + timedelta(days=(low >> DAY_SHIFT) - 1)
    last = EPOCH + timedelta(days=((high - 1) >> DAY_SHIFT) + 1)
    return {
        "low": low,
        "high": high,
        "first_event": bounds(first).events[0],
        "after_event": bounds(last).events[1],
    }
