"""Admin for event types and their schema versions (versions are read-only). It lives in the
webhooks app because its preview sends a sample through an endpoint's settings; the schema
app below knows nothing of endpoints."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from schemas_app.compatibility import breaking_changes
from schemas_app.models import EventType, SchemaVersion
from schemas_app.services import (
    PreviewRejected,
    event_type_create,
    event_type_fields_check,
    event_type_preview,
    event_type_update,
    schema_document_check,
)
from webhooks.models import Endpoint


class SchemaVersionInline(admin.TabularInline):
    model = SchemaVersion
    fields = readonly_fields = ("version", "schema", "created_at", "created_by", "changes")
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class PrettyJSONField(forms.JSONField):
    """JSON shown indented, in a textarea that fits it (Django's is one long line)."""

    widget = forms.Textarea(attrs={"rows": 14, "cols": 90, "style": "font-family: monospace"})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


class PreviewForm(forms.Form):
    # the form's metaclass moves declared fields off the class, so this does not shadow .data
    data = PrettyJSONField(  # type: ignore[assignment]
        required=False,  # `{}` is data, which a required JSON field would refuse as empty
        help_text="A sample event's data.",
    )
    endpoint = forms.ModelChoiceField(
        queryset=Endpoint.objects.order_by("url"),
        required=False,
        help_text="Preview what this endpoint would receive (its own mapping and masking).",
    )

    def clean_data(self) -> Any:
        value = self.cleaned_data.get("data")
        if value is None:
            raise ValidationError("Give the event's data (a JSON value: {} is an empty object).")
        return value


class EventTypeAdminForm(forms.ModelForm):
    """The admin's event type form runs the API's rules (services.event_type_fields_check), and
    edits the schema: a changed one becomes a new version, a breaking change only with
    `allow_breaking` (the compatibility report is the error)."""

    schema = PrettyJSONField(
        required=False,  # `{}` (any object) is a schema, which a required field would refuse
        help_text="The JSON Schema (Draft 2020-12) events of this type are checked against. "
        "A change becomes a new version; the versions are listed below.",
    )
    allow_breaking = forms.BooleanField(
        required=False,
        help_text="Accept a schema that refuses events the current version accepts.",
    )

    class Meta:
        model = EventType
        fields = "__all__"  # noqa: DJ007 - the admin shows every editable field
        field_classes = dict.fromkeys(
            ("example", "transform", "output_schema", "masking", "sensitive_fields"),
            PrettyJSONField,
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self._current()
        self.fields["schema"].initial = current.schema if current is not None else {}
        if current is None:
            del self.fields["allow_breaking"]  # a new type has nothing to break
        for name in ("example", "transform", "output_schema", "masking", "sensitive_fields"):
            if name in self.fields:
                self.fields[name].required = False

    def _current(self) -> SchemaVersion | None:
        if not self.instance.pk:
            return None
        return self.instance.versions.order_by("-version").first()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        current = self._current()
        schema = cleaned.get("schema")
        if schema is None:
            self.add_error("schema", "Give a JSON Schema ({} accepts any object).")
            return cleaned
        try:
            schema_document_check(schema)
        except ValidationError as exc:
            self.add_error("schema", exc.message_dict.get("schema", exc.messages))
            return cleaned
        if current is not None and current.schema != schema:
            changes = breaking_changes(current.schema, schema)
            if changes and not cleaned.get("allow_breaking"):
                report = "; ".join(f"{c.pointer or '/'}: {c.detail}" for c in changes)
                self.add_error(
                    "schema",
                    f"Breaking changes against version {current.version}: {report}. Tick "
                    "allow_breaking to accept them.",
                )
                return cleaned
        try:
            event_type_fields_check(
                schema=schema,
                example=cleaned.get("example"),
                transform=cleaned.get("transform"),
                output_schema=cleaned.get("output_schema"),
                masking=cleaned.get("masking"),
                sensitive_fields=cleaned.get("sensitive_fields"),
                retry_schedule=cleaned.get("retry_schedule"),
            )
        except ValidationError as exc:
            for field, problems in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, problems)
        return cleaned


@admin.register(EventType)
class EventTypeAdmin(admin.ModelAdmin):
    form = EventTypeAdminForm
    list_display = ["name", "description", "state", "updated_at", "preview_link"]
    list_filter = ["archived"]
    search_fields = ["name", "description"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [SchemaVersionInline]

    def save_model(self, request: HttpRequest, obj: EventType, form: Any, change: bool) -> None:
        """Through the services, as the API does: checked, versioned and audited."""
        fields = {
            "description": obj.description,
            "archived": obj.archived,
            "example": obj.example,
            "transform": obj.transform,
            "output_schema": obj.output_schema,
            "masking": obj.masking,
            "sensitive_fields": obj.sensitive_fields,
            "retry_schedule": obj.retry_schedule,
        }
        actor = f"admin:{request.user}"
        schema = form.cleaned_data["schema"]
        if change:
            event_type_update(
                event_type=obj,
                actor=actor,
                schema=schema,
                allow_breaking=bool(form.cleaned_data.get("allow_breaking")),
                **fields,
            )
        else:
            created = event_type_create(name=obj.name, schema=schema, actor=actor, **fields)
            obj.pk = created.pk

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # events refer to their type; archive it instead

    @admin.display(description="state", ordering="archived")
    def state(self, obj: EventType) -> str:
        # words, not Django's red cross for False: an event type in use is not an error
        return "archived" if obj.archived else "in use"

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
            "pretty": json.dumps(json.loads(body), indent=2, ensure_ascii=False) if body else None,
            "errors": errors,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/schemas_app/eventtype/preview.html", context)
