"""Writes for applications, endpoints, their secrets, and API keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from schemas_app import masking
from schemas_app.models import EventType
from schemas_app.payloads import check_mapping
from schemas_app.transform import TransformError
from webhooks_project.pointers import escape_pointer_token
from webhooks_project.schedules import schedule_problem

from . import audit, crypto, subscriptions
from .filters import FilterError, compile_filter
from .headers import HeaderRefused, check_headers
from .models import ApiKey, Application, Endpoint, EndpointSecret, Source
from .signing import generate_secret, new_secret
from .ssrf import BlockedTarget, Target, check_url

ENDPOINT_FIELDS = (
    "url",
    "description",
    "application",
    "event_types",
    "enabled",
    "headers",
    "rate_limit_per_second",
    "retry_schedule",
    "timeout_seconds",
    "signature_scheme",
    "transforms",
    "masking",
    "encryption_key",
    "filter",
    "filters",
    "channels",
    "ordering",
    "ordering_on_dead",
    "trace_propagation",
)


def check_target(url: str, *, resolve_host: bool = True) -> Target:
    """`url` checked under this deployment's SSRF settings (raises BlockedTarget)."""
    return check_url(
        url,
        allow_private=settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS,
        allowed_cidrs=settings.WEBHOOKS_ALLOWED_TARGET_NETWORKS,
        https_only=settings.WEBHOOKS_HTTPS_ONLY,
        resolve_host=resolve_host,
    )


def _transforms_checked(transforms: Any) -> None:
    """An endpoint's per-type mappings: known event types, each mapping compiles."""
    if not isinstance(transforms, dict):
        raise ValidationError({"transforms": "Give an object of event type name -> mapping."})
    known = set(EventType.objects.filter(name__in=list(transforms)).values_list("name", flat=True))
    for name, mapping in transforms.items():
        if name not in known:
            raise ValidationError({"transforms": f"Unknown event type {name!r}."})
        try:
            check_mapping(mapping)
        except TransformError as exc:
            raise ValidationError(
                {"transforms": f"/{name}{exc.pointer if exc.pointer != '/' else ''}: {exc.message}"}
            ) from exc


def _masking_checked(rules: Any, encryption_key: Any) -> None:
    if not isinstance(rules, dict):
        raise ValidationError({"masking": "Give an object of event type name -> rules."})
    for name, document in rules.items():
        try:
            masking.parse_rules(document)
        except masking.MaskingError as exc:
            raise ValidationError({"masking": f"/{name}{exc}"}) from exc
    if encryption_key is not None:
        try:
            masking.check_public_jwk(encryption_key)
        except masking.MaskingError as exc:
            raise ValidationError({"encryption_key": str(exc)}) from exc


def _check_target(url: str) -> None:
    try:
        check_target(url)
    except BlockedTarget as exc:
        raise ValidationError({"url": f"This URL cannot receive webhooks: {exc}"}) from exc


MAX_TIMEOUT_SECONDS = 60


def max_request_seconds() -> int:
    """The longest request a claim's lease covers: an endpoint's `timeout_seconds` may be at
    most this (60 s, or less under a lease shorter than 65 s)."""
    covered = settings.WEBHOOKS_LEASE_SECONDS - settings.WEBHOOKS_LEASE_MARGIN_SECONDS
    return max(1, min(MAX_TIMEOUT_SECONDS, covered))


def _schedule_checked(schedule: Any) -> None:
    problem = schedule_problem(schedule)
    if problem is not None:
        raise ValidationError({"retry_schedule": problem})


def _filter_checked(spec: Any, field: str, pointer: str = "") -> None:
    try:
        compile_filter(spec, pointer)
    except FilterError as exc:
        raise ValidationError(
            {field: ValidationError(exc.message, code="invalid", params={"pointer": exc.pointer})}
        ) from exc


def _filters_checked(filters: Any) -> None:
    """Per-type filters: an object of known event type names -> filter."""
    if not isinstance(filters, dict):
        raise ValidationError({"filters": "Give an object of event type name -> filter."})
    known = set(EventType.objects.filter(name__in=list(filters)).values_list("name", flat=True))
    for name, spec in filters.items():
        if name not in known:
            raise ValidationError(
                {
                    "filters": ValidationError(
                        f"Unknown event type {name!r}.",
                        code="invalid",
                        params={"pointer": "/" + escape_pointer_token(name)},
                    )
                }
            )
        _filter_checked(spec, "filters", "/" + escape_pointer_token(name))


def _event_types_checked(names: Any) -> list[str]:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValidationError({"event_types": "Give a list of event type names."})
    names = list(dict.fromkeys(names))
    for name in names:
        if subscriptions.is_pattern(name):
            try:
                subscriptions.check_pattern(name)
            except subscriptions.PatternError as exc:
                raise ValidationError({"event_types": str(exc)}) from exc
    plain = [n for n in names if not subscriptions.is_pattern(n)]
    known = set(EventType.objects.filter(name__in=plain).values_list("name", flat=True))
    unknown = [n for n in plain if n not in known]
    if unknown:
        raise ValidationError({"event_types": f"Unknown event types: {', '.join(unknown)}."})
    return names


def endpoint_fields_check(
    *, fields: dict[str, Any], endpoint: Endpoint | None = None
) -> dict[str, Any]:
    """The rules every way of saving an endpoint runs (the API, the admin, commands): the URL
    against SSRF (when new or changed), headers, retry schedule, timeout, event types,
    per-type mappings, masking and encryption key. Returns the fields normalised; raises a
    ValidationError keyed by field."""
    out = dict(fields)
    if "url" in out and (endpoint is None or out["url"] != endpoint.url):
        _check_target(out["url"])
    if "headers" in out:
        try:
            out["headers"] = check_headers(out["headers"] or {})
        except HeaderRefused as exc:
            raise ValidationError({"headers": str(exc)}) from exc
    if "retry_schedule" in out:
        _schedule_checked(out["retry_schedule"])
    timeout = out.get("timeout_seconds")
    most = max_request_seconds()
    if timeout is not None and not (isinstance(timeout, int) and 1 <= timeout <= most):
        limit = "" if most == MAX_TIMEOUT_SECONDS else " (what WEBHOOKS_LEASE_SECONDS covers)"
        raise ValidationError({"timeout_seconds": f"Give whole seconds from 1 to {most}{limit}."})
    if "event_types" in out:
        out["event_types"] = _event_types_checked(out["event_types"] or [])
    if "transforms" in out:
        out["transforms"] = out["transforms"] or {}  # null means none
        _transforms_checked(out["transforms"])
    if "channels" in out:
        out["channels"] = list(dict.fromkeys(out["channels"] or []))
        problem = subscriptions.channels_problem(
            out["channels"], subscriptions.MAX_ENDPOINT_CHANNELS
        )
        if problem is not None:
            raise ValidationError({"channels": problem})
    if out.get("filter") is not None:
        _filter_checked(out["filter"], "filter")
    if "filters" in out:
        out["filters"] = out["filters"] or {}  # null means none
        _filters_checked(out["filters"])
    if "masking" in out or "encryption_key" in out:
        current_masking = endpoint.masking if endpoint is not None else {}
        current_key = endpoint.encryption_key if endpoint is not None else None
        out["masking"] = out.get("masking", current_masking) or {}
        _masking_checked(out["masking"], out.get("encryption_key", current_key))
    return out


APPLICATION_FIELDS = ("uid", "name", "portal_name", "portal_logo_url", "portal_accent")


@transaction.atomic
def application_create(
    *, uid: str, name: str, actor: str = "system", **branding: str
) -> Application:
    """Create a consumer application (`branding`: its portal's name, logo URL, accent)."""
    unknown = set(branding) - set(APPLICATION_FIELDS)
    if unknown:
        raise TypeError(f"unknown application fields: {sorted(unknown)}")
    application = Application(uid=uid, name=name, **branding)
    application.full_clean()
    application.save()
    audit.record(
        actor=actor,
        action="application.created",
        object_type="application",
        object_id=application.uid,
        after=audit.application_snapshot(application),
    )
    return application


@transaction.atomic
def application_update(
    *, application: Application, actor: str = "system", **fields: Any
) -> Application:
    """Change an application's uid, name or portal branding."""
    unknown = set(fields) - set(APPLICATION_FIELDS)
    if unknown:
        raise TypeError(f"unknown application fields: {sorted(unknown)}")
    before = audit.application_snapshot(Application.objects.get(pk=application.pk))
    for name, value in fields.items():
        setattr(application, name, value)
    application.full_clean()
    application.save()
    audit.record_change(
        actor=actor,
        action="application.updated",
        object_type="application",
        object_id=application.uid,
        before=before,
        after=audit.application_snapshot(application),
    )
    return application


@transaction.atomic
def application_delete(*, application: Application, actor: str = "system") -> None:
    """Delete an application with its endpoints and events (the audit log keeps the record)."""
    before = audit.application_snapshot(application)
    audit.record(
        actor=actor,
        action="application.deleted",
        object_type="application",
        object_id=application.uid,
        before=before,
    )
    application.delete()


@transaction.atomic
def endpoint_create(*, actor: str = "system", **fields: Any) -> tuple[Endpoint, str]:
    """Create an endpoint and its first signing secret; returns (endpoint, secret)."""
    unknown = set(fields) - set(ENDPOINT_FIELDS)
    if unknown:
        raise TypeError(f"unknown endpoint fields: {sorted(unknown)}")
    fields = endpoint_fields_check(fields=fields)
    endpoint = Endpoint(**fields)
    endpoint.full_clean()
    endpoint.save()
    secret = new_secret(endpoint.signature_scheme)
    EndpointSecret.objects.create(endpoint=endpoint, secret=crypto.encrypt(secret))
    audit.record(
        actor=actor,
        action="endpoint.created",
        object_type="endpoint",
        object_id=endpoint.pk,
        after=audit.endpoint_snapshot(endpoint),
    )
    return endpoint, secret


@dataclass(frozen=True)
class RotatedSecret:
    secret: str  # whsec_ or whsk_: the API shows a whsk_ secret's public key instead
    previous_expire_at: datetime | None  # when the secrets it replaces stop signing


@transaction.atomic
def endpoint_secret_rotate(
    *, endpoint: Endpoint, grace_seconds: int | None = None, actor: str = "system"
) -> RotatedSecret:
    """Give the endpoint a new signing secret; the current ones keep signing for the grace.

    During the grace every request carries a signature by each secret (Standard Webhooks allows
    several in `webhook-signature`), so the consumer can switch to the new secret without a
    gap. A secret already due to expire sooner keeps its earlier time. Grace 0 retires the
    current secrets at once.
    """
    grace = settings.WEBHOOKS_SECRET_ROTATION_GRACE if grace_seconds is None else grace_seconds
    now = timezone.now()
    expire_at = now + timedelta(seconds=grace)
    Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()  # one rotation at a time
    current = EndpointSecret.objects.filter(endpoint=endpoint).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=expire_at)
    )
    had_current = current.update(expires_at=expire_at) > 0
    secret = new_secret(endpoint.signature_scheme)
    EndpointSecret.objects.create(endpoint=endpoint, secret=crypto.encrypt(secret), created_at=now)
    audit.record(
        actor=actor,
        action="endpoint.secret_rotated",
        object_type="endpoint",
        object_id=endpoint.pk,
        after={
            "grace_seconds": grace,
            "previous_expire_at": expire_at.isoformat() if had_current else None,
        },
    )
    return RotatedSecret(secret=secret, previous_expire_at=expire_at if had_current else None)


@transaction.atomic
def endpoint_update(*, endpoint: Endpoint, actor: str = "system", **fields: Any) -> Endpoint:
    """Change an endpoint's settings; re-enabling clears the disabled reason."""
    unknown = set(fields) - set(ENDPOINT_FIELDS)
    if unknown:
        raise TypeError(f"unknown endpoint fields: {sorted(unknown)}")
    before = audit.endpoint_snapshot(Endpoint.objects.get(pk=endpoint.pk))
    fields = endpoint_fields_check(fields=fields, endpoint=endpoint)
    if fields.get("signature_scheme", endpoint.signature_scheme) != endpoint.signature_scheme:
        raise ValidationError(
            {
                "signature_scheme": "The signature scheme is fixed; "
                "create a new endpoint for another."
            }
        )
    for name, value in fields.items():
        setattr(endpoint, name, value)
    if fields.get("enabled") is True:
        endpoint.disabled_reason = ""
        endpoint.disabled_at = None
        endpoint.failing_since = None
    elif fields.get("enabled") is False and endpoint.disabled_at is None:
        endpoint.disabled_at = timezone.now()
        endpoint.disabled_reason = endpoint.disabled_reason or "disabled by an operator"
    endpoint.full_clean()
    endpoint.save()
    audit.record_change(
        actor=actor,
        action="endpoint.updated",
        object_type="endpoint",
        object_id=endpoint.pk,
        before=before,
        after=audit.endpoint_snapshot(endpoint),
    )
    return endpoint


@transaction.atomic
def endpoint_delete(*, endpoint: Endpoint, actor: str = "system") -> None:
    """Delete an endpoint with its secrets, deliveries and their attempts."""
    audit.record(
        actor=actor,
        action="endpoint.deleted",
        object_type="endpoint",
        object_id=endpoint.pk,
        before=audit.endpoint_snapshot(endpoint),
    )
    endpoint.delete()


@transaction.atomic
def api_key_create(
    *,
    name: str,
    scopes: Sequence[str],
    application: Application | None = None,
    expires_at: datetime | None = None,
    actor: str = "system",
) -> tuple[ApiKey, str]:
    """Create an API key; returns (key row, plaintext key). The plaintext is never stored."""
    try:
        ApiKey._meta.get_field("name").clean(name, None)  # its length, before any row is made
    except ValidationError as exc:
        raise ValidationError({"name": exc.messages}) from exc
    valid = set(ApiKey.Scope.values)
    bad = [s for s in scopes if s not in valid]
    if bad:
        raise ValidationError({"scopes": f"unknown scopes {bad}; choose from {sorted(valid)}"})
    api_key, key = ApiKey.objects.create_key(
        name=name, scopes=list(scopes), application=application, expiry_date=expires_at
    )
    audit.record(
        actor=actor,
        action="api_key.created",
        object_type="api_key",
        object_id=api_key.prefix,
        after=audit.api_key_snapshot(api_key),
    )
    return api_key, key


@dataclass(frozen=True)
class CreatedSource:
    source: Source
    secret: str  # whsec_...: the source signs its requests with it
    api_key: ApiKey
    key: str  # the source's API key


@transaction.atomic
def source_create(
    *,
    name: str,
    require_signature: bool = True,
    application: Application | None = None,
    scopes: Sequence[str] = (ApiKey.Scope.EVENTS_WRITE,),
    actor: str = "system",
) -> CreatedSource:
    """Create an event source with its signing secret and its first API key (both shown once)."""
    secret = generate_secret()
    source = Source(name=name, require_signature=require_signature, secret=crypto.encrypt(secret))
    source.full_clean()
    source.save()
    api_key, key = api_key_create(name=name, scopes=scopes, application=application, actor=actor)
    api_key.source = source
    api_key.save(update_fields=["source"])
    audit.record(
        actor=actor,
        action="source.created",
        object_type="source",
        object_id=source.pk,
        after={"name": name, "require_signature": require_signature, "api_key": api_key.prefix},
    )
    return CreatedSource(source=source, secret=secret, api_key=api_key, key=key)


@transaction.atomic
def api_key_revoke(*, prefix: str, actor: str = "system") -> ApiKey:
    """Revoke the key with this prefix for good; raises ApiKey.DoesNotExist."""
    api_key = ApiKey.objects.get(prefix=prefix)
    if not api_key.revoked:
        api_key.revoked = True
        api_key.save(update_fields=["revoked"])
        audit.record(
            actor=actor,
            action="api_key.revoked",
            object_type="api_key",
            object_id=api_key.prefix,
            after=audit.api_key_snapshot(api_key),
        )
    return api_key


def secrets_reencrypt(*, batch_size: int = 500) -> int:
    """Re-encrypt every endpoint secret under the first encryption key; returns how many.

    In batches, each in its own transaction with its rows locked. Raises SecretUnreadable (and
    changes nothing more) if a secret is under a key that is no longer configured.
    """
    count = 0
    last = 0
    while True:
        with transaction.atomic():
            rows = list(
                EndpointSecret.objects.select_for_update()
                .filter(pk__gt=last)
                .order_by("pk")[:batch_size]
            )
            if not rows:
                return count
            for row in rows:
                row.secret = crypto.rotate(row.secret)
            EndpointSecret.objects.bulk_update(rows, ["secret"])
        count += len(rows)
        last = rows[-1].pk
