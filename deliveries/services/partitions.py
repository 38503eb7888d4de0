"""Day partitions of the tables that grow with traffic, and retention by dropping them.

Events, deliveries and attempts are PostgreSQL range-partitioned tables with one partition per
UTC day, so a day past retention goes with one `DROP TABLE` instead of millions of `DELETE`s
(which leave dead tuples and index bloat, and never give the disk back):

- events by `id`: ids are time-ordered (`webhooks_project.identifiers`), and the column uses the
  "C" collation, so a day is the id range from that day's first possible id to the next day's;
- deliveries by `id`, which carries the day of its *event*: `(day << DAY_SHIFT) + a sequence`
  (`delivery_id`), so every delivery of an event lives in that event's day, and the unique
  `(event_id, endpoint_id)` index of each partition is unique over the whole table;
- attempts by `delivery_id`, on the same bounds as the deliveries.

Each table also has a `default` partition, which holds what no day covers: the rows kept past
retention (below), and rows of a day whose partition was never made (the health check reports
that; `partitions_ensure` keeps WEBHOOKS_PARTITIONS_AHEAD days made ahead). Deliveries and
attempts made before the tables were partitioned keep their ids in a `legacy` partition
(ids below `1 << DAY_SHIFT`), dropped the same way once everything in it is past retention.

Nothing owed is dropped: before a day goes, the events that still have a delivery that did not
succeed before the cutoff (pending, in flight, failed or dead, waiting for a replay) are moved,
with all their deliveries and attempts, into the default partitions, where the row-by-row
`events_prune` removes them once they are done. Dead letters are not partitioned (there are few);
those of the dropped deliveries are deleted with them.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.utils import OperationalError
from django.utils import timezone

from deliveries.models import DeadLetter, Delivery, DeliveryAttempt, Event, IdempotencyKey
from deliveries.partition_keys import LEGACY_END, DayBounds, bounds, day_ddl, day_start

logger = logging.getLogger(__name__)

_DAY_NAME = re.compile(r"_p(\d{8})$")


def _tables() -> tuple[str, str, str]:
    return (Event._meta.db_table, Delivery._meta.db_table, DeliveryAttempt._meta.db_table)


def partition_days() -> list[date]:
    """The days that have partitions, oldest first."""
    events, _, _ = _tables()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [events],
        )
        names = [row[0] for row in cursor.fetchall()]
    days = []
    for name in names:
        match = _DAY_NAME.search(name)
        if match:
            days.append(datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC).date())
    return sorted(days)


def create_day(day: date) -> bool:
    """Make the three partitions of `day` (and the per-day unique index of deliveries).
    Returns False when it could not: the lock was not had in time (the next run tries again),
    or rows of that day already sit in a default partition (a day that was not made ahead,
    which then stays in the default partitions)."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '1s'")
            for sql in day_ddl(day):
                cursor.execute(sql)
    except OperationalError as exc:
        logger.warning("could not create the partitions of %s: %s", day, exc)
        return False
    except DatabaseError as exc:
        if "would be violated by some row" not in str(exc):
            raise
        logger.warning("rows of %s are in the default partitions; that day stays there", day)
        return False
    return True


def partitions_ensure(*, today: date | None = None, ahead: int | None = None) -> list[date]:
    """Beat job: make today's partitions and the next `ahead` days' (WEBHOOKS_PARTITIONS_AHEAD).
    Returns the days made now."""
    today = today or timezone.now().astimezone(UTC).date()
    ahead = settings.WEBHOOKS_PARTITIONS_AHEAD if ahead is None else ahead
    have = set(partition_days())
    made = []
    for n in range(ahead + 1):
        day = today + timedelta(days=n)
        if day not in have and create_day(day):
            made.append(day)
    return made


# A delivery still owed, read through indexes only (status, and status + completed_at), so that
# finding what to keep costs what is kept, not the size of the day: it runs under the lock.
_OWED = (
    "(status IN ('pending', 'in_flight', 'failed', 'dead') "
    "OR (status = 'succeeded' AND completed_at >= %(cutoff)s))"
)


def _kept_rows(cursor: Any, part: str, b: DayBounds | None, cutoff: datetime) -> None:
    """Fill temp tables keep_events / keep_deliveries with what must outlive the partition:
    every delivery still owed, and all the deliveries of an event of the day that has one owed
    anywhere (`b` None: the legacy partition, whose events are in the day partitions)."""
    _, deliveries, _ = _tables()
    params = {"cutoff": cutoff, "lo": b.events[0] if b else "", "hi": b.events[1] if b else ""}
    cursor.execute(
        f"CREATE TEMP TABLE keep_direct ON COMMIT DROP AS SELECT id, event_id FROM {part} "
        f"WHERE {_OWED}",
        params,
    )
    if b is None:
        cursor.execute(
            "CREATE TEMP TABLE keep_events ON COMMIT DROP AS SELECT DISTINCT event_id FROM "
            "keep_direct"
        )
    else:
        # stray deliveries of the day's events elsewhere (made by hand): their event stays too
        cursor.execute(
            "CREATE TEMP TABLE keep_events ON COMMIT DROP AS "
            "SELECT event_id FROM keep_direct WHERE event_id >= %(lo)s AND event_id < %(hi)s "
            f"UNION SELECT event_id FROM {deliveries} "
            f"WHERE event_id >= %(lo)s AND event_id < %(hi)s AND {_OWED}",
            params,
        )
    cursor.execute(
        "CREATE TEMP TABLE keep_deliveries ON COMMIT DROP AS "
        "SELECT id FROM keep_direct UNION "
        f"SELECT id FROM {part} WHERE event_id IN (SELECT event_id FROM keep_events)"
    )


def drop_day(day: date, *, cutoff: datetime) -> dict[str, int]:
    """Drop the partitions of `day`, first moving what is still owed into the default ones.

    One transaction, with a lock timeout of a second (the next run tries again): DETACH takes
    the parent tables' exclusive lock, and every query of them waits behind it, for as long as
    the move takes. That is short whatever the size of the day: what to keep is found through
    the status indexes and only the rows kept are copied.
    """
    events, deliveries, attempts = _tables()
    b = bounds(day)
    parts = {table: f"{table}_{b.suffix}" for table in _tables()}
    with transaction.atomic(), connection.cursor() as cursor:
        # counted before the lock: this one reads the whole day
        cursor.execute(f"SELECT count(*) FROM {parts[events]}")
        day_events = cursor.fetchone()[0]
        cursor.execute("SET LOCAL lock_timeout = '1s'")
        # deferred foreign-key checks of rows written earlier in this transaction run now: a
        # table with pending checks cannot be dropped
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table in (attempts, deliveries, events):
            cursor.execute(f"ALTER TABLE {table} DETACH PARTITION {parts[table]}")
        _kept_rows(cursor, parts[deliveries], b, cutoff)
        cursor.execute(
            f"INSERT INTO {events} SELECT * FROM {parts[events]} "
            "WHERE id IN (SELECT event_id FROM keep_events)"
        )
        kept_events = cursor.rowcount
        cursor.execute(
            f"INSERT INTO {deliveries} SELECT * FROM {parts[deliveries]} "
            "WHERE id IN (SELECT id FROM keep_deliveries)"
        )
        kept = cursor.rowcount
        cursor.execute(
            f"INSERT INTO {attempts} SELECT * FROM {parts[attempts]} "
            "WHERE delivery_id IN (SELECT id FROM keep_deliveries)"
        )
        cursor.execute(
            f"DELETE FROM {DeadLetter._meta.db_table} WHERE delivery_id >= %s "
            "AND delivery_id < %s AND delivery_id NOT IN (SELECT id FROM keep_deliveries)",
            list(b.deliveries),
        )
        cursor.execute(
            f"DELETE FROM {IdempotencyKey._meta.db_table} WHERE event_id >= %s "
            "AND event_id < %s AND event_id NOT IN (SELECT event_id FROM keep_events)",
            list(b.events),
        )
        dropped = day_events - kept_events
        for table in (attempts, deliveries, events):
            cursor.execute(f"DROP TABLE {parts[table]}")
        cursor.execute("DROP TABLE keep_direct, keep_deliveries, keep_events")  # a caller's
    return {"events_dropped": dropped, "events_kept": kept_events, "deliveries_kept": kept}


def partitions_expire(*, now: datetime | None = None) -> dict[str, int]:
    """Beat job: drop every day whose whole span is past WEBHOOKS_RETENTION_DAYS (and the
    legacy partition, once nothing in it is newer than that). Returns what it did."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.WEBHOOKS_RETENTION_DAYS)
    totals = {"days": 0, "events_dropped": 0, "events_kept": 0, "deliveries_kept": 0}
    for day in partition_days():
        if day_start(day) + timedelta(days=1) > cutoff:
            break
        try:
            done = drop_day(day, cutoff=cutoff)
        except OperationalError as exc:
            logger.warning("could not drop the partitions of %s (next run): %s", day, exc)
            break
        totals["days"] += 1
        for key, value in done.items():
            totals[key] += value
        logger.info("dropped the partitions of %s: %s", day, done)
    if _legacy_expired(cutoff):
        try:
            _drop_legacy(cutoff)
            totals["legacy"] = 1
        except OperationalError as exc:
            logger.warning("could not drop the legacy partitions (next run): %s", exc)
    return totals


def _legacy_expired(cutoff: datetime) -> bool:
    _, deliveries, _ = _tables()
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [f"{deliveries}_legacy"])
        if cursor.fetchone()[0] is None:
            return False
        cursor.execute(f"SELECT max(created_at) FROM {deliveries}_legacy")  # noqa: S608
        newest = cursor.fetchone()[0]
    return newest is None or newest < cutoff


def _drop_legacy(cutoff: datetime) -> None:
    """The deliveries and attempts from before partitioning, like a day (their events live in
    the day partitions already)."""
    _, deliveries, attempts = _tables()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '1s'")
        # deferred foreign-key checks of rows written earlier in this transaction run now: a
        # table with pending checks cannot be dropped
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table in (attempts, deliveries):
            cursor.execute(f"ALTER TABLE {table} DETACH PARTITION {table}_legacy")
        _kept_rows(cursor, f"{deliveries}_legacy", None, cutoff)
        cursor.execute(
            f"INSERT INTO {deliveries} SELECT * FROM {deliveries}_legacy "
            "WHERE id IN (SELECT id FROM keep_deliveries)"
        )
        cursor.execute(
            f"INSERT INTO {attempts} SELECT * FROM {attempts}_legacy "
            "WHERE delivery_id IN (SELECT id FROM keep_deliveries)"
        )
        cursor.execute(
            f"DELETE FROM {DeadLetter._meta.db_table} WHERE delivery_id < %s "
            "AND delivery_id NOT IN (SELECT id FROM keep_deliveries)",
            [LEGACY_END],
        )
        for table in (attempts, deliveries):
            cursor.execute(f"DROP TABLE {table}_legacy")
        cursor.execute("DROP TABLE keep_direct, keep_deliveries, keep_events")
