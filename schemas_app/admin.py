"""Admin for event types and their schema versions (versions are read-only)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from webhooks.models import Endpoint

from .models import EventType, SchemaVersion
from .services import PreviewRejected, event_type_preview


class SchemaVersionInline(admin.TabularInline):
    model = SchemaVersion
    fields = ["version", "schema", "created_at", "created_by", "changes"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class PreviewForm(forms.Form):
    data = forms.JSONField(
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80}), help_text="A sample event's data."
    )
    endpoint = forms.ModelChoiceField(
        queryset=Endpoint.objects.order_by("url"),
        required=False,
        help_text="Preview what this endpoint would receive (its own mapping and masking).",
    )


@admin.register(EventType)
class EventTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "archived", "updated_at", "preview_link"]
    list_filter = ["archived"]
    search_fields = ["name", "description"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [SchemaVersionInline]

    @admin.display(description="Preview")
    def preview_link(self, obj: EventType) -> str:
        url = reverse("admin:schemas_app_eventtype_preview", args=[obj.pk])
        return format_html('<a href="{}">preview</a>', url)

    def get_urls(self) -> list[Any]:
        preview = path(
            "<path:object_id>/preview/",
            self.admin_site.admin_view(self.preview_view),
            name="schemas_app_eventtype_preview",
        )
        return [preview, *super().get_urls()]

    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        event_type = get_object_or_404(EventType, pk=object_id)
        if not self.has_view_permission(request, event_type):
            raise PermissionDenied
        form = PreviewForm(request.POST or None, initial={"data": event_type.example or {}})
        body, errors = None, None
        if request.method == "POST" and form.is_valid():
            try:
                body = event_type_preview(
                    event_type=event_type,
                    data=form.cleaned_data["data"],
                    endpoint=form.cleaned_data["endpoint"],
                )["body"]
            except PreviewRejected as exc:
                errors = exc.errors
        context = {
            **self.admin_site.each_context(request),
            "title": f"Preview {event_type.name}",
            "event_type": event_type,
            "form": form,
            "body": body,
            "errors": errors,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/schemas_app/eventtype/preview.html", context)
