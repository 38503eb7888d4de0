"""Admin for applications, API keys, the audit log and sources. The endpoint admin, whose
health columns and actions need the delivery engine, is `deliveries.endpoint_admin`. Secrets
are never displayed here."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from audit.models import AuditRecord

from . import audit
from . import event_type_admin as _registers_event_type_admin  # noqa: F401
from .models import ApiKey, Application, Source
from .services import application_delete


def clipped(text: str | None, length: int) -> str:
    """`text` cut to `length` characters for a list column, the whole of it on hover."""
    text = text or ""
    if len(text) <= length:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[: length - 1])


class AuditedAdmin(admin.ModelAdmin):
    """Saves made in the admin are audited like the API's (actor `admin:<user>`): subclasses
    name the object type and how to snapshot its non-secret fields."""

    audit_type = ""

    @staticmethod
    def audit_snapshot(obj: Any, /) -> dict[str, Any]:
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
