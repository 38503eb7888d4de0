"""Admin for event types and their schema versions (versions are read-only)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import EventType, SchemaVersion


class SchemaVersionInline(admin.TabularInline):
    model = SchemaVersion
    fields = ["version", "schema", "created_at", "created_by", "changes"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(EventType)
class EventTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "archived", "updated_at"]
    list_filter = ["archived"]
    search_fields = ["name", "description"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [SchemaVersionInline]
