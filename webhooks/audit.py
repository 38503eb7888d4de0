"""The audit log of configuration changes, as a hash chain.

Each record's hash is SHA-256 over the previous record's hash and the record's own content
(canonical JSON), so editing a record, or removing one from the middle, breaks every later
link; `verify_audit_chain` walks the chain and names the first break. Appends are serialized
by a transaction-level advisory lock and happen in the same transaction as the change they
describe: a change that rolls back leaves no record, and no record exists without its change.
Secrets never enter a record: endpoint header values are replaced by a marker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import connection, transaction
from django.utils import timezone

from .models import ApiKey, AuditRecord, Endpoint

GENESIS = "0" * 64
_LOCK = 0x7765626B  # pg_advisory_xact_lock key of the chain ("webk")
REDACTED = "[redacted]"


def endpoint_snapshot(endpoint: Endpoint) -> dict[str, Any]:
    """An endpoint's auditable fields (header values are secrets: only names are kept)."""
    return {
        "url": endpoint.url,
        "description": endpoint.description,
        "application": endpoint.application.uid if endpoint.application_id else None,
        "event_types": list(endpoint.event_types),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "headers": dict.fromkeys(endpoint.headers or {}, REDACTED),
        "retry_schedule": endpoint.retry_schedule,
        "timeout_seconds": endpoint.timeout_seconds,
        "rate_limit_per_second": endpoint.rate_limit_per_second,
        "signature_scheme": endpoint.signature_scheme,
        "transforms": endpoint.transforms,
        "masking": endpoint.masking,
        "encryption_key": endpoint.encryption_key,  # public: safe to record
    }


def api_key_snapshot(api_key: ApiKey) -> dict[str, Any]:
    return {
        "name": api_key.name,
        "prefix": api_key.prefix,
        "scopes": list(api_key.scopes),
        "application": api_key.application.uid if api_key.application_id else None,
        "source": api_key.source_id,
        "expiry_date": api_key.expiry_date.isoformat() if api_key.expiry_date else None,
        "revoked": api_key.revoked,
    }


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
    object belongs to) is found from the snapshots or the endpoint when not given."""
    if application is None:
        application = _application_of(object_type, str(object_id), before, after)
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
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any],
) -> AuditRecord | None:
    """Record an update only if the snapshots differ (a save that changed nothing leaves none)."""
    if after == before:
        return None
    return record(
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        before=before,
        after=after,
    )


def _application_of(
    object_type: str, object_id: str, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> str | None:
    if object_type == "application":
        return object_id
    for snapshot in (after, before):
        if snapshot and isinstance(snapshot.get("application"), str):
            return snapshot["application"]
    if object_type == "endpoint":
        return (
            Endpoint.objects.filter(pk=object_id).values_list("application__uid", flat=True).first()
        )
    return None


def application_snapshot(application: Any) -> dict[str, Any]:
    return {"uid": application.uid, "name": application.name}


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
