"""The audit log of configuration changes, as a hash chain.

Each record's hash is SHA-256 over the previous record's hash and the record's own content
(canonical JSON), so editing a record, or removing one from the middle, breaks every later
link; `verify_audit_chain` walks the chain and names the first break. Appends are serialized
by a transaction-level advisory lock and happen in the same transaction as the change they
describe: a change that rolls back leaves no record, and no record exists without its change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import connection, transaction
from django.utils import timezone

from .models import AuditRecord

GENESIS = "0" * 64
_LOCK = 0x7765626B  # pg_advisory_xact_lock key of the chain ("webk")


def _digest(prev_hash: str, record: AuditRecord) -> str:
    content = {
        "prev": prev_hash,
        "at": record.at.isoformat(),
        "actor": record.actor,
        "action": record.action,
        "object_type": record.object_type,
        "object_id": record.object_id,
        "before": record.before,
        "after": record.after,
    }
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def record(
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    application: str | None = None,
) -> AuditRecord:
    """Append one record to the chain, in the caller's transaction. `application` (the uid the
    object belongs to) is taken from the snapshots when not given."""
    if application is None:
        application = application_of(object_type, str(object_id), before, after)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
        last = AuditRecord.objects.order_by("-id").values_list("hash", flat=True).first()
        entry = AuditRecord(
            at=timezone.now(),
            actor=actor[:200],
            action=action,
            object_type=object_type,
            object_id=str(object_id)[:64],
            before=_json_safe(before),
            after=_json_safe(after),
            application=application or "",
        )
        entry.prev_hash = last or GENESIS
        entry.hash = _digest(entry.prev_hash, entry)
        entry.save()
        return entry


def record_change(
    *, before: dict[str, Any] | None, after: dict[str, Any], **fields: Any
) -> AuditRecord | None:
    """`record` for an update, only if the snapshots differ (a save that changed nothing leaves
    none)."""
    return None if after == before else record(before=before, after=after, **fields)


def application_of(
    object_type: str, object_id: str, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> str | None:
    """The uid of the application a change belongs to, as far as the record itself says."""
    if object_type == "application":
        return object_id
    for snapshot in (after, before):
        if snapshot and isinstance(snapshot.get("application"), str):
            return snapshot["application"]
    return None


def _json_safe(value: dict[str, Any] | None) -> dict[str, Any] | None:
    # exactly what the JSON column will give back, so the hash verifies after a round trip
    return None if value is None else orjson.loads(orjson.dumps(value, default=str))


@dataclass(frozen=True)
class ChainBreak:
    record_id: int
    reason: str


def verify_chain(*, batch_size: int = 1000) -> tuple[int, ChainBreak | None]:
    """Walk the chain from the first record; returns (records checked, first break or None)."""
    checked = 0
    prev = GENESIS
    for entry in _in_order(batch_size):
        if entry.prev_hash != prev:
            return checked, ChainBreak(entry.pk, "does not link to the record before it")
        if _digest(prev, entry) != entry.hash:
            return checked, ChainBreak(entry.pk, "its content does not match its hash")
        prev = entry.hash
        checked += 1
    return checked, None


def _in_order(batch_size: int) -> Iterator[AuditRecord]:
    last = 0
    while True:
        batch = list(AuditRecord.objects.filter(pk__gt=last).order_by("pk")[:batch_size])
        if not batch:
            return
        yield from batch
        last = batch[-1].pk
