"""Admin for events, deliveries with their attempts (the audit log), and dead letters."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html

from schemas_app.models import EventType
from webhooks.admin import clipped
from webhooks_project.paging import EstimatedCountPaginator

# importing it registers the endpoint admin (it lives with the engine it needs)
from .endpoint_admin import replay_and_report
from .models import DeadLetter, Delivery, Event, IdempotencyKey
from .services.dead_letters import AlreadyHandled, dead_letter_skip
from .services.resend import NotNow, delivery_resend, delivery_retry_now


class ReadOnlyAdmin(admin.ModelAdmin):
    """The delivery record is written by the engine only; the admin shows it.

    These tables grow with traffic: no full count (`show_full_result_count`, an estimated
    paginator), no date drill-down (`date_hierarchy` reads every row's date for its links), and
    filters that list the small tables (event types, endpoints), never distinct values of a big
    one.
    """

    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the audit trail: nobody deletes it here, superusers included


class ReadOnlyInline(admin.TabularInline):
    """Rows written by the engine, shown beside their parent."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class DeliveryInline(ReadOnlyInline):
    model = Delivery
    fields = readonly_fields = (
        "endpoint",
        "status",
        "attempt_count",
        "last_status_code",
        "next_attempt_at",
        "completed_at",
    )
    show_change_link = True


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["id", "event_type", "application", "created_at"]
    list_filter = ["event_type", "application", "created_at"]
    search_fields = ["=id"]  # exact: a substring search reads every row
    search_help_text = "An event id, or an idempotency key."
    inlines = [DeliveryInline]
    list_select_related = ["application", "event_type"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Event], search_term: str
    ) -> tuple[QuerySet[Event], bool]:
        """By id, or by idempotency key through its table (the events' column has no index:
        searching it would read every partition)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        keyed = IdempotencyKey.objects.filter(key=term).values_list("event_id", flat=True)
        return queryset.filter(id__in=[term, *keyed]), False


def _pretty(body: str) -> str:
    """A JSON body indented for reading; anything else as it is."""
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return body


def delivery_timeline(delivery: Delivery) -> list[dict[str, Any]]:
    """The delivery's life, in order: accepted, each attempt (offset from acceptance, outcome,
    status, duration, the body sent, the response excerpt), dead letters and replays, and
    where it stands now."""
    accepted = delivery.event.created_at
    entries: list[dict[str, Any]] = [{"kind": "accepted", "at": accepted, "offset": None}]
    for attempt in delivery.attempts.order_by("number"):
        attempt.delivery = delivery  # the body sent is stored on it, once
        body = attempt.sent_body
        entries.append(
            {
                "kind": "attempt",
                "at": attempt.started_at,
                "attempt": attempt,
                "body": _pretty(body) if body else "",
                "response": _pretty(attempt.response_body) if attempt.response_body else "",
                "expired": body is None,
                "truncated": body is not None
                and (attempt.request_body_bytes or 0) > len(body.encode()),
            }
        )
    for dead_letter in delivery.dead_letters.all():
        entries.append({"kind": "dead_letter", "at": dead_letter.created_at, "dl": dead_letter})
        if dead_letter.replayed_at:
            entries.append({"kind": "replayed", "at": dead_letter.replayed_at, "dl": dead_letter})
    entries.sort(key=lambda e: e["at"])
    for entry in entries:
        entry["offset"] = (entry["at"] - accepted).total_seconds()
    if delivery.status == Delivery.Status.PENDING and delivery.next_attempt_at:
        entries.append(
            {
                "kind": "next",
                "at": delivery.next_attempt_at,
                "offset": (delivery.next_attempt_at - accepted).total_seconds(),
            }
        )
    elif delivery.status == Delivery.Status.PENDING and delivery.sequence is not None:
        entries.append(
            {"kind": "turn", "key": delivery.ordering_key, "sequence": delivery.sequence}
        )
    return entries


def _each(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    ids: Iterable[Any],
    act: Callable[[Any, str], Any],
    refusal: type[Exception],
    noun: str,
    done: str,
) -> None:
    """An admin action applied to each selected row through its service, as this user: how many
    were done, and (up to ten) which were refused and why."""
    changed, refused = 0, []
    for pk in ids:
        try:
            act(pk, f"admin:{request.user}")
            changed += 1
        except refusal as exc:
            refused.append(f"{pk}: {exc}")
    if changed:
        model_admin.message_user(request, f"{changed} {noun} {done}.", messages.SUCCESS)
    for text in refused[:10]:
        ending = "" if text.endswith(".") else "."
        model_admin.message_user(request, f"Not {done}: {text}{ending}", messages.WARNING)


def _endpoint_short(endpoint: Any) -> str:
    """An endpoint in a list column: its description, else its URL, cut, the rest on hover."""
    return format_html(
        '<span title="{} {}">{}</span>',
        endpoint.pk,
        endpoint.url,
        clipped(endpoint.description or endpoint.url, 36),
    )


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "event_id",
        "event_type",
        "endpoint_short",
        "status",
        "attempts",
        "last_status",
        "when",
    ]
    list_filter = [
        "status",
        "event__event_type",
        "endpoint",
        "endpoint__application",
        "created_at",
    ]
    search_fields = ["=id", "=event__id", "=endpoint__id", "endpoint__url"]
    raw_id_fields = ["event", "endpoint"]
    # written by the engine (not editable): shown all the same
    readonly_fields = ["ordering_key", "sequence", "payload_expired_at"]
    actions = ["resend_selected", "retry_selected_now"]

    def has_resend_permission(self, request: HttpRequest) -> bool:
        # sending again is replaying: the same permission as dead letters' replay
        return request.user.has_perm("deliveries.change_deadletter")

    @admin.action(description="Send selected finished deliveries again", permissions=["resend"])
    def resend_selected(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        self._operate(request, queryset[:1000], delivery_resend, "sent again")

    @admin.action(description="Retry selected waiting deliveries now", permissions=["resend"])
    def retry_selected_now(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        self._operate(request, queryset[:1000], delivery_retry_now, "retried now")

    def _operate(
        self, request: HttpRequest, queryset: QuerySet[Delivery], operation: Any, done: str
    ) -> None:
        _each(
            self,
            request,
            queryset.values_list("id", flat=True),
            lambda pk, actor: operation(delivery_id=pk, actor=actor),
            NotNow,
            "deliveries",
            done,
        )

    # not the event: a join of two partitioned tables costs more to plan than to run; the
    # page's event types come in one query of their days (get_changelist_instance)
    list_select_related = ["endpoint"]
    change_form_template = "admin/deliveries/delivery/change_form.html"

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)
        types = dict(
            Event.objects.filter(id__in={row.event_id for row in rows}).values_list(
                "id", "event_type_id"
            )
        )
        for row in rows:
            row._event_type = types.get(row.event_id, "")
        return changelist

    @admin.display(description="event")
    def event_id(self, obj: Delivery) -> str:
        return clipped(obj.event_id, 14)

    @admin.display(description="attempts", ordering="attempt_count")
    def attempts(self, obj: Delivery) -> int:
        return obj.attempt_count

    @admin.display(description="last status", ordering="last_status_code")
    def last_status(self, obj: Delivery) -> str:
        return str(obj.last_status_code) if obj.last_status_code else "–"

    @admin.display(description="ended / next", ordering="completed_at")
    def when(self, obj: Delivery) -> str:
        def short(moment: Any) -> str:
            return formats.date_format(timezone.localtime(moment), "SHORT_DATETIME_FORMAT")

        if obj.completed_at is not None:
            return short(obj.completed_at)
        if obj.next_attempt_at is not None:
            return f"next {short(obj.next_attempt_at)}"
        return "waiting for its turn" if obj.sequence is not None else "–"

    @admin.display(description="endpoint", ordering="endpoint")
    def endpoint_short(self, obj: Delivery) -> str:
        return _endpoint_short(obj.endpoint)

    @admin.display(description="event type")
    def event_type(self, obj: Delivery) -> str:
        return getattr(obj, "_event_type", None) or obj.event.event_type_id

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        delivery = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if delivery is not None:
            context["timeline"] = delivery_timeline(delivery)
        return super().change_view(request, object_id, form_url, extra_context=context)


class EventTypeFilter(admin.SimpleListFilter):
    """By event type, listed from the catalog (not from the distinct values of a big table)."""

    title = "event type"
    parameter_name = "event_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (name, name)
            for name in EventType.objects.order_by("name").values_list("name", flat=True)
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(event_type=value) if value else queryset


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    # the delivery (its status), not its event and type: Django's default would follow every
    # foreign key, joining a second partitioned table that costs more to plan than to read
    list_select_related = ["delivery", "endpoint"]
    list_display = [
        "id",
        "delivery_link",
        "endpoint_short",
        "event_type",
        "reason_short",
        "last_status",
        "created_at",
        "handled",
    ]
    list_filter = [
        ("replayed_at", admin.EmptyFieldListFilter),
        EventTypeFilter,
        "endpoint",
        "created_at",
    ]
    raw_id_fields = ["delivery", "endpoint"]
    actions = ["replay_selected", "skip_selected"]

    @admin.display(description="delivery", ordering="delivery")
    def delivery_link(self, obj: DeadLetter) -> str:
        url = reverse("admin:deliveries_delivery_change", args=[obj.delivery_id])
        return format_html('<a href="{}">{}</a>', url, obj.delivery_id)

    @admin.display(description="endpoint", ordering="endpoint")
    def endpoint_short(self, obj: DeadLetter) -> str:
        return _endpoint_short(obj.endpoint)

    @admin.display(description="reason", ordering="reason")
    def reason_short(self, obj: DeadLetter) -> str:
        return clipped(obj.reason, 48)

    @admin.display(description="last status", ordering="last_status_code")
    def last_status(self, obj: DeadLetter) -> str:
        return str(obj.last_status_code) if obj.last_status_code else "–"

    @admin.display(description="handled", ordering="replayed_at")
    def handled(self, obj: DeadLetter) -> str:
        if obj.replayed_at is None:
            return "waiting"
        how = "skipped" if obj.skipped else "replayed"
        return format_html(
            '<span title="by {}">{} {}</span>',
            obj.replayed_by,
            how,
            formats.date_format(timezone.localtime(obj.replayed_at), "SHORT_DATETIME_FORMAT"),
        )

    def has_replay_permission(self, request: HttpRequest) -> bool:
        # the record itself is read-only for everyone; replaying needs the change permission
        return request.user.has_perm("deliveries.change_deadletter")

    @admin.action(description="Replay selected dead letters", permissions=["replay"])
    def replay_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        replay_and_report(self, request, queryset)

    @admin.action(
        description="Skip selected dead letters (handled without sending again: an ordering "
        "key they hold moves on)",
        permissions=["replay"],
    )
    def skip_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        _each(
            self,
            request,
            queryset.values_list("id", flat=True)[:1000],
            lambda pk, actor: dead_letter_skip(dead_letter_id=pk, actor=actor),
            AlreadyHandled,
            "dead letters",
            "skipped",
        )
