"""The endpoint admin: configuration, health from the metrics rollup, and the lifecycle actions
(disable, enable with replay, test events, secret rotation, dead-letter replay). It lives with
the delivery engine, which it needs; the webhooks app below it knows nothing of deliveries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Sum
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from deliveries.models import DeadLetter, DeliveryStat
from deliveries.services.dead_letters import dead_letters_replay
from deliveries.services.endpoints import (
    EndpointNotSendable,
    endpoint_disable,
    endpoint_enable,
    endpoint_ordering_changed,
    endpoint_send_test,
)
from webhooks import audit, signing
from webhooks.admin import AuditedAdmin, clipped
from webhooks.headers import MASK
from webhooks.models import Endpoint, EndpointSecret
from webhooks.services import (
    ENDPOINT_FIELDS,
    endpoint_delete,
    endpoint_fields_check,
    endpoint_secret_rotate,
)


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
            for field, errors in exc.error_dict.items():
                for error in errors:
                    pointer = (
                        (error.params or {}).get("pointer")
                        if isinstance(error.params, dict)
                        else None
                    )
                    for message in error.messages:  # a filter's problem says where it is
                        text = f"{pointer}: {message}" if pointer else message
                        self.add_error(field if field in self.fields else None, text)
            return cleaned
        cleaned.update({k: v for k, v in checked.items() if k in given})
        return cleaned


@admin.register(Endpoint)
class EndpointAdmin(AuditedAdmin):
    form = EndpointAdminForm
    # fits a 1280 px screen: the endpoint by its description and URL (its id on hover and on
    # its page), long texts cut with the whole on hover
    list_display = [
        "endpoint",
        "application",
        "enabled",
        "health",
        "last_failure",
        "reason",
    ]
    list_display_links = ["endpoint"]
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

    def save_model(self, request: HttpRequest, obj: Endpoint, form: Any, change: bool) -> None:
        stored = Endpoint.objects.filter(pk=obj.pk).values_list("ordering_on_dead", flat=True)
        before = (stored.first() if change else None) or obj.ordering_on_dead
        super().save_model(request, obj, form, change)
        endpoint_ordering_changed(endpoint=obj, on_dead_before=before)

    def get_fields(self, request: HttpRequest, obj: Endpoint | None = None) -> list[Any]:
        """Header values are secrets: staff who may only view see their names."""
        fields = list(super().get_fields(request, obj))
        if obj is not None and not self.has_change_permission(request, obj):
            fields = ["masked_headers" if f == "headers" else f for f in fields]
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: Endpoint | None = None) -> list[Any]:
        return [*super().get_readonly_fields(request, obj), "masked_headers"]

    @admin.display(description="headers")
    def masked_headers(self, obj: Endpoint) -> str:
        return ", ".join(f"{name}: {MASK}" for name in (obj.headers or {})) or "–"

    @admin.display(description="endpoint", ordering="url")
    def endpoint(self, obj: Endpoint) -> str:
        url = clipped(obj.url, 60)
        if not obj.description:
            return format_html('<span title="{}">{}</span>', obj.pk, url)
        return format_html(
            '<strong title="{}">{}</strong><br><small>{}</small>',
            obj.pk,
            clipped(obj.description, 50),
            url,
        )

    @admin.display(description="disabled because", ordering="disabled_reason")
    def reason(self, obj: Endpoint) -> str:
        return clipped(obj.disabled_reason, 40) or "–"

    @admin.display(description="success (24h)", ordering="recent_succeeded")
    def health(self, obj: Endpoint) -> str:
        finished = getattr(obj, "recent_finished", None)
        if not finished:
            return "–"
        succeeded = getattr(obj, "recent_succeeded", None) or 0
        rate = succeeded / finished
        color = "#2e7d32" if rate >= 0.99 else "#ef6c00" if rate >= 0.9 else "#c62828"
        return format_html(
            '<span style="color:{}" title="{} of {} deliveries">{}%</span>',
            color,
            succeeded,
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
        replay_and_report(self, request, DeadLetter.objects.filter(endpoint__in=queryset))
