"""Admin for applications, endpoints and API keys. Secrets are never displayed here."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from .models import ApiKey, Application, Endpoint, EndpointSecret, Source

# The library registers its own concrete key model; ours (with scopes) replaces it.
if admin.site.is_registered(LibraryAPIKey):
    admin.site.unregister(LibraryAPIKey)


@admin.register(Application)
class ApplicationAdmin(admin.ModelAdmin):
    list_display = ["uid", "name", "created_at"]
    search_fields = ["uid", "name"]


class EndpointSecretInline(admin.TabularInline):
    model = EndpointSecret
    fields = ["created_at", "expires_at"]
    readonly_fields = ["created_at", "expires_at"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "url",
        "application",
        "enabled",
        "disabled_reason",
        "failing_since",
        "event_types",
        "created_at",
    ]
    list_filter = ["enabled", "application"]
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
    actions = ["enable", "enable_and_replay_missed", "replay_dead_letters"]

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

    @admin.action(description="Re-enable selected endpoints")
    def enable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        self._enable(request, queryset, replay=False)

    @admin.action(description="Re-enable selected endpoints and replay what they missed")
    def enable_and_replay_missed(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        self._enable(request, queryset, replay=True)

    @admin.action(description="Replay all dead letters of selected endpoints")
    def replay_dead_letters(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        from deliveries.admin import replay_and_report
        from deliveries.models import DeadLetter

        replay_and_report(self, request, DeadLetter.objects.filter(endpoint__in=queryset))


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
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


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    """Event sources; created with `manage.py create_source`, which shows the secret once."""

    list_display = ["name", "id", "require_signature", "created_at"]
    search_fields = ["name", "id"]
    fields = ["id", "name", "require_signature", "created_at"]
    readonly_fields = ["id", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
