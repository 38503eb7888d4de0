"""The webhooks app's objects in the audit log: their snapshots (secrets never enter a record:
endpoint header values are replaced by a marker), and records of changes to them, which also
find the application an endpoint belongs to. The chain itself is `audit.chain`."""

from __future__ import annotations

from typing import Any

from audit import chain
from audit.models import AuditRecord
from schemas_app.masking import REDACTED

from .models import ApiKey, Endpoint


def endpoint_snapshot(endpoint: Endpoint) -> dict[str, Any]:
    """An endpoint's auditable fields (header values are secrets: only names are kept)."""
    return {
        "url": endpoint.url,
        "description": endpoint.description,
        "application": endpoint.application.uid if endpoint.application is not None else None,
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
        "filter": endpoint.filter,
        "filters": endpoint.filters,
        "channels": list(endpoint.channels or ()),
        "ordering": endpoint.ordering,
        "ordering_on_dead": endpoint.ordering_on_dead,
        "trace_propagation": endpoint.trace_propagation,
    }


def api_key_snapshot(api_key: ApiKey) -> dict[str, Any]:
    return {
        "name": api_key.name,
        "prefix": api_key.prefix,
        "scopes": list(api_key.scopes),
        "application": api_key.application.uid if api_key.application is not None else None,
        "source": api_key.source_id,
        "expiry_date": api_key.expiry_date.isoformat() if api_key.expiry_date else None,
        "revoked": api_key.revoked,
    }


def application_snapshot(application: Any) -> dict[str, Any]:
    return {
        "uid": application.uid,
        "name": application.name,
        "portal_name": application.portal_name,
        "portal_logo_url": application.portal_logo_url,
        "portal_accent": application.portal_accent,
    }


def record(
    *,
    object_type: str,
    object_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    application: str | None = None,
    **fields: Any,
) -> AuditRecord:
    """`audit.chain.record`, with an endpoint's application looked up when no snapshot names it."""
    if application is None:
        application = chain.application_of(object_type, str(object_id), before, after)
    if application is None and object_type == "endpoint":
        application = (
            Endpoint.objects.filter(pk=object_id).values_list("application__uid", flat=True).first()
        )
    return chain.record(
        object_type=object_type,
        object_id=object_id,
        before=before,
        after=after,
        application=application,
        **fields,
    )


def record_change(
    *, before: dict[str, Any] | None, after: dict[str, Any], **fields: Any
) -> AuditRecord | None:
    """`record` for an update, only if the snapshots differ (a save that changed nothing leaves
    none)."""
    return None if after == before else record(before=before, after=after, **fields)
