"""Admin for applications, endpoints and API keys. Secrets are never displayed here."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from .models import ApiKey, Application, Endpoint, EndpointSecret

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
    list_display = ["id", "url", "application", "enabled", "event_types", "created_at"]
    list_filter = ["enabled", "application"]
    search_fields = ["id", "url", "description"]
    readonly_fields = ["id", "disabled_at", "created_at", "updated_at"]
    inlines = [EndpointSecretInline]
    formfield_overrides = {
        models.URLField: {"form_class": forms.URLField, "assume_scheme": "https"},
    }


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "prefix",
        "scopes",
        "application",
        "revoked",
        "expiry_date",
        "last_used_at",
        "created",
    ]
    list_filter = ["revoked", "application"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created", "last_used_at"]
    fields = [
        "name",
        "prefix",
        "scopes",
        "application",
        "expiry_date",
        "revoked",
        "created",
        "last_used_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Keys are created with `manage.py create_api_key`, which shows the key once.
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return super().get_queryset(request).select_related("application")
