"""Admin for events, deliveries with their attempts (the audit log), and dead letters."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import DeadLetter, Delivery, DeliveryAttempt, Event
from .services import dead_letters_replay


class ReadOnlyAdmin(admin.ModelAdmin):
    """The delivery record is written by the engine only; the admin shows it."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    """Rows written by the engine, shown beside their parent."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class DeliveryInline(ReadOnlyInline):
    model = Delivery
    fields = [
        "endpoint",
        "status",
        "attempt_count",
        "last_status_code",
        "next_attempt_at",
        "completed_at",
    ]
    readonly_fields = fields
    show_change_link = True


class AttemptInline(ReadOnlyInline):
    model = DeliveryAttempt
    fields = [
        "number",
        "outcome",
        "started_at",
        "duration_ms",
        "status_code",
        "error_class",
        "error",
        "response_body",
        "request_headers",
    ]
    readonly_fields = fields


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["id", "event_type", "application", "created_at"]
    list_filter = ["event_type", "application", "created_at"]
    search_fields = ["id", "idempotency_key"]
    date_hierarchy = "created_at"
    inlines = [DeliveryInline]
    list_select_related = ["application"]


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "event",
        "endpoint",
        "status",
        "attempt_count",
        "last_status_code",
        "next_attempt_at",
        "completed_at",
    ]
    list_filter = ["status", "endpoint", "created_at"]
    search_fields = ["event__id", "endpoint__id", "endpoint__url"]
    raw_id_fields = ["event", "endpoint"]
    inlines = [AttemptInline]


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "delivery",
        "endpoint",
        "event_type",
        "reason",
        "last_status_code",
        "created_at",
        "replayed_at",
        "replayed_by",
    ]
    list_filter = [
        ("replayed_at", admin.EmptyFieldListFilter),
        "event_type",
        "endpoint",
        "created_at",
    ]
    raw_id_fields = ["delivery", "endpoint"]
    actions = ["replay_selected"]

    @admin.action(description="Replay selected dead letters")
    def replay_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        replay_and_report(self, request, queryset)


def replay_and_report(
    model_admin: admin.ModelAdmin, request: HttpRequest, dead_letters: QuerySet[DeadLetter]
) -> None:
    """Replay waiting dead letters as the admin user, and tell them what happened."""
    result = dead_letters_replay(dead_letters=dead_letters, actor=f"admin:{request.user}")
    model_admin.message_user(
        request,
        f"Replayed {result.replayed} deliveries; skipped {result.skipped_disabled} of "
        "disabled endpoints (re-enable them first).",
        messages.SUCCESS if result.replayed else messages.WARNING,
    )
