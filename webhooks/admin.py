"""Admin for applications, endpoints and API keys. Secrets are never displayed here."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Sum
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from . import audit, signing
from .headers import MASK
from .models import ApiKey, Application, AuditRecord, Endpoint, EndpointSecret, Source
from .services import (
    ENDPOINT_FIELDS,
    application_delete,
    endpoint_delete,
    endpoint_disable,
    endpoint_fields_check,
    endpoint_secret_rotate,
)


class AuditedAdmin(admin.ModelAdmin):
    """Saves made in the admin are audited like the API's (actor `admin:<user>`): subclasses
    name the object type and how to snapshot its non-secret fields."""

    audit_type = ""

    @staticmethod
    def audit_snapshot(obj: Any) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def audit_object_id(obj: Any) -> str:
        return str(obj.pk)

    def audit_action(self, before: dict[str, Any] | None, after: dict[str, Any]) -> str:
        return f"{self.audit_type}.{'updated' if before is not None else 'created'}"

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        model = type(obj)
        before = self.audit_snapshot(model.objects.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)
        after = self.audit_snapshot(obj)
        audit.record_change(
            actor=f"admin:{request.user}",
            action=self.audit_action(before, after),
            object_type=self.audit_type,
            object_id=self.audit_object_id(obj),
            before=before,
            after=after,
        )


# The library registers its own concrete key model; ours (with scopes) replaces it.
if admin.site.is_registered(LibraryAPIKey):
    admin.site.unregister(LibraryAPIKey)


@admin.register(Application)
class ApplicationAdmin(AuditedAdmin):
    list_display = ["uid", "name", "created_at"]
    search_fields = ["uid", "name"]
    audit_type = "application"
    audit_snapshot = staticmethod(audit.application_snapshot)

    @staticmethod
    def audit_object_id(obj: Any) -> str:
        return str(obj.uid)

    def delete_model(self, request: HttpRequest, obj: Application) -> None:
        application_delete(application=obj, actor=f"admin:{request.user}")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Application]) -> None:
        for application in queryset:
            application_delete(application=application, actor=f"admin:{request.user}")


class EndpointSecretInline(admin.TabularInline):
    model = EndpointSecret
    fields = ["created_at", "expires_at"]
    readonly_fields = ["created_at", "expires_at"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class HealthFilter(admin.SimpleListFilter):
    title = "health"
    parameter_name = "health"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("failing", "Failing now"),
            ("healthy", "Healthy"),
            ("disabled", "Disabled"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> QuerySet[Endpoint]:
        if self.value() == "failing":
            return queryset.filter(enabled=True, failing_since__isnull=False)
        if self.value() == "healthy":
            return queryset.filter(enabled=True, failing_since__isnull=True)
        if self.value() == "disabled":
            return queryset.filter(enabled=False)
        return queryset


HEALTH_WINDOW = timedelta(hours=24)


def _with_health(queryset: QuerySet[Endpoint]) -> QuerySet[Endpoint]:
    """Annotate the last day's finished and succeeded deliveries, and the last quarter-hour
    with a failure in the last week, from the metrics rollup's quarter-hour rows."""
    from deliveries.models import DeliveryStat  # deliveries depends on this app

    now = timezone.now()
    recent = DeliveryStat.objects.filter(
        endpoint_id=OuterRef("pk"), span=900, bucket__gte=now - HEALTH_WINDOW
    ).values("endpoint_id")

    def total(expression: Any) -> Subquery:
        return Subquery(recent.annotate(v=Sum(expression)).values("v")[:1])

    failures = DeliveryStat.objects.filter(
        endpoint_id=OuterRef("pk"), span=900, bucket__gte=now - timedelta(days=7)
    ).filter(Q(failed__gt=0) | Q(dead__gt=0) | Q(retried__gt=0))
    return queryset.annotate(
        recent_succeeded=total(F("succeeded")),
        recent_finished=total(F("succeeded") + F("failed") + F("dead")),
        last_failure=Subquery(failures.order_by("-bucket").values("bucket")[:1]),
    )


class EndpointAdminForm(forms.ModelForm):
    """The admin's endpoint form runs the same rules as the API (services.endpoint_fields_check):
    the SSRF check on the URL, header rules, schedules, mappings, masking."""

    url = forms.URLField(max_length=2048, assume_scheme="https")

    class Meta:
        model = Endpoint
        fields = "__all__"  # noqa: DJ007 - the admin shows every editable field

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        given = {k: cleaned[k] for k in ENDPOINT_FIELDS if k in cleaned}
        if self.errors:
            return cleaned
        try:
            checked = endpoint_fields_check(
                fields=given, endpoint=self.instance if self.instance.pk else None
            )
        except ValidationError as exc:
            for field, problems in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, problems)
            return cleaned
        cleaned.update({k: v for k, v in checked.items() if k in given})
        return cleaned


@admin.register(Endpoint)
class EndpointAdmin(AuditedAdmin):
    form = EndpointAdminForm
    list_display = [
        "id",
        "url",
        "application",
        "enabled",
        "health",
        "last_failure",
        "disabled_reason",
    ]
    list_filter = ["enabled", HealthFilter, "application"]
    search_fields = ["id", "url", "description"]
    readonly_fields = [
        "id",
        "disabled_reason",
        "disabled_at",
        "failing_since",
        "created_at",
        "updated_at",
    ]
    inlines = [EndpointSecretInline]
    formfield_overrides = {
        models.URLField: {"form_class": forms.URLField, "assume_scheme": "https"},
    }
    actions = [
        "send_test_event",
        "enable",
        "enable_and_replay_missed",
        "disable",
        "rotate_secret",
        "replay_dead_letters",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Endpoint]:
        return _with_health(super().get_queryset(request).select_related("application"))

    def get_fields(self, request: HttpRequest, obj: Endpoint | None = None) -> list[str]:
        """Header values are secrets: staff who may only view see their names."""
        fields = list(super().get_fields(request, obj))
        if obj is not None and not self.has_change_permission(request, obj):
            fields = ["masked_headers" if f == "headers" else f for f in fields]
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: Endpoint | None = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "masked_headers"]

    @admin.display(description="headers")
    def masked_headers(self, obj: Endpoint) -> str:
        return ", ".join(f"{name}: {MASK}" for name in (obj.headers or {})) or "–"

    @admin.display(description="success (24h)", ordering="recent_succeeded")
    def health(self, obj: Endpoint) -> str:
        finished = getattr(obj, "recent_finished", None)
        if not finished:
            return "–"
        rate = (obj.recent_succeeded or 0) / finished
        color = "#2e7d32" if rate >= 0.99 else "#ef6c00" if rate >= 0.9 else "#c62828"
        return format_html(
            '<span style="color:{}" title="{} of {} deliveries">{}%</span>',
            color,
            obj.recent_succeeded or 0,
            finished,
            f"{rate * 100:.1f}",
        )

    @admin.display(description="last failure", ordering="last_failure")
    def last_failure(self, obj: Endpoint) -> str:
        at = getattr(obj, "last_failure", None)
        return timezone.localtime(at).strftime("%Y-%m-%d %H:%M") if at else "–"

    @admin.action(description="Disable selected endpoints", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        actor = f"admin:{request.user}"
        changed = sum(
            endpoint_disable(endpoint_id=pk, reason=f"disabled by {actor}", actor=actor)
            for pk in queryset.values_list("id", flat=True)
        )
        self.message_user(
            request,
            f"Disabled {changed} endpoints. Their pending deliveries become dead letters when "
            "next attempted; re-enable with replay to send them.",
            messages.SUCCESS,
        )

    @admin.action(
        description="Rotate the signing secret of selected endpoints (shown once)",
        permissions=["change"],
    )
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> HttpResponse:
        rotated = []
        for endpoint in queryset:
            result = endpoint_secret_rotate(endpoint=endpoint, actor=f"admin:{request.user}")
            public = signing.public_key(result.secret)
            rotated.append(
                {
                    "endpoint": endpoint,
                    "secret": None if public else result.secret,
                    "public_key": public,
                    "previous_expire_at": result.previous_expire_at,
                }
            )
        # Rendered into this response only: never stored in a message, a cookie or the session.
        response = TemplateResponse(
            request,
            "admin/webhooks/endpoint/rotated.html",
            {
                **self.admin_site.each_context(request),
                "title": "New signing secrets",
                "rotated": rotated,
                "opts": self.model._meta,
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Send a test event to selected endpoints", permissions=["change"])
    def send_test_event(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        from deliveries.services import EndpointNotSendable, endpoint_send_test

        sent, skipped = [], []
        for endpoint in queryset:
            try:
                sent.append(
                    endpoint_send_test(endpoint_id=endpoint.pk, actor=f"admin:{request.user}")
                )
            except EndpointNotSendable:
                skipped.append(endpoint.pk)
        message = f"Queued {len(sent)} webhook.test events; see each endpoint's deliveries."
        if skipped:
            message += f" Skipped {len(skipped)} disabled endpoints."
        self.message_user(request, message, messages.SUCCESS)

    audit_type = "endpoint"

    @staticmethod
    def audit_snapshot(obj: Endpoint) -> dict[str, Any]:
        return audit.endpoint_snapshot(obj)

    def delete_model(self, request: HttpRequest, obj: Endpoint) -> None:
        endpoint_delete(endpoint=obj, actor=f"admin:{request.user}")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset:
            endpoint_delete(endpoint=endpoint, actor=f"admin:{request.user}")

    def _enable(self, request: HttpRequest, queryset: QuerySet[Endpoint], replay: bool) -> None:
        from deliveries.services import endpoint_enable  # deliveries depends on this app

        enabled = replayed = backfilled = 0
        for endpoint_id in queryset.values_list("id", flat=True):
            result = endpoint_enable(
                endpoint_id=endpoint_id, actor=f"admin:{request.user}", replay_missed=replay
            )
            enabled += result.was_disabled
            replayed += result.replayed
            backfilled += result.backfilled
        message = f"Re-enabled {enabled} endpoints."
        if replay:
            message += (
                f" Replayed {replayed} dead letters; {backfilled} events missed while disabled "
                "will be sent within a sweep interval."
            )
        self.message_user(request, message, messages.SUCCESS)

    @admin.action(description="Re-enable selected endpoints", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        self._enable(request, queryset, replay=False)

    @admin.action(
        description="Re-enable selected endpoints and replay what they missed",
        permissions=["change"],
    )
    def enable_and_replay_missed(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        self._enable(request, queryset, replay=True)

    @admin.action(
        description="Replay all dead letters of selected endpoints", permissions=["change"]
    )
    def replay_dead_letters(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        from deliveries.admin import replay_and_report
        from deliveries.models import DeadLetter

        replay_and_report(self, request, DeadLetter.objects.filter(endpoint__in=queryset))


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdmin):
    list_display = [
        "name",
        "prefix",
        "scopes",
        "application",
        "source",
        "revoked",
        "expiry_date",
        "last_used_at",
        "created",
    ]
    list_filter = ["revoked", "application"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created", "last_used_at", "source"]
    fields = [
        "name",
        "prefix",
        "scopes",
        "application",
        "source",
        "expiry_date",
        "revoked",
        "created",
        "last_used_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Keys are created with `manage.py create_api_key`, which shows the key once.
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return super().get_queryset(request).select_related("application", "source")

    audit_type = "api_key"

    @staticmethod
    def audit_snapshot(obj: ApiKey) -> dict[str, Any]:
        return audit.api_key_snapshot(obj)

    @staticmethod
    def audit_object_id(obj: ApiKey) -> str:
        return obj.prefix

    @staticmethod
    def audit_action(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
        if before is not None and not before["revoked"] and after["revoked"]:
            return "api_key.revoked"
        return "api_key.updated" if before is not None else "api_key.created"

    def delete_model(self, request: HttpRequest, obj: ApiKey) -> None:
        self.delete_queryset(request, ApiKey.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        with transaction.atomic():
            for api_key in queryset:
                audit.record(
                    actor=f"admin:{request.user}",
                    action="api_key.deleted",
                    object_type="api_key",
                    object_id=api_key.prefix,
                    before=audit.api_key_snapshot(api_key),
                )
                api_key.delete()


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
    """The audit log: read-only here as everywhere (`manage.py verify_audit_chain` checks it)."""

    list_display = ["at", "actor", "action", "object_type", "object_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_id", "action"]
    date_hierarchy = "at"
    readonly_fields = [f.name for f in AuditRecord._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    """Event sources; created with `manage.py create_source`, which shows the secret once."""

    list_display = ["name", "id", "require_signature", "created_at"]
    search_fields = ["name", "id"]
    fields = ["id", "name", "require_signature", "created_at"]
    readonly_fields = ["id", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
