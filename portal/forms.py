"""The portal's forms: what a partner may set on an endpoint (its URL, description, the event
types it takes, custom headers, a rate limit), and the filters of its lists. The service that
saves an endpoint runs the API's own rules on top (SSRF included)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.db.models import QuerySet

from deliveries.models import Delivery
from schemas_app.models import EventType
from webhooks.headers import HeaderRefused, check_headers
from webhooks.models import Endpoint

__all__ = ["DeliveryFilter", "EndpointForm", "HeaderForm", "forms", "grace_seconds", "moment"]


class EndpointForm(forms.Form):
    url = forms.URLField(
        label="URL",
        max_length=2048,
        assume_scheme="https",
        help_text="Where the webhooks are POSTed.",
    )
    description = forms.CharField(label="Description", max_length=500, required=False)
    event_types = forms.MultipleChoiceField(
        label="Event types",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None chosen: every event type.",
    )
    rate_limit_per_second = forms.IntegerField(
        label="Rate limit (requests per second)",
        required=False,
        min_value=1,
        max_value=100_000,
        help_text="Empty: no limit. Over it, deliveries wait; they never fail for it.",
    )

    def __init__(
        self,
        *args: Any,
        catalog: list[EventType],
        endpoint: Endpoint | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.endpoint = endpoint
        choices = [(t.name, t.name) for t in catalog]
        # a type the endpoint already takes stays choosable after it was archived
        for name in (endpoint.event_types if endpoint else []) or []:
            if name not in {c[0] for c in choices}:
                choices.append((name, f"{name} (archived)"))
        self.fields["event_types"].choices = choices  # type: ignore[attr-defined]

    def endpoint_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "url": data["url"],
            "description": data["description"],
            "event_types": list(data["event_types"]),
            "rate_limit_per_second": data["rate_limit_per_second"],
        }


class HeaderForm(forms.Form):
    """One custom header to add or replace (its value is never shown again)."""

    name = forms.CharField(label="Header name", max_length=200, required=False)
    value = forms.CharField(label="Value", max_length=1000, required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        name, value = data.get("name") or "", data.get("value") or ""
        if name or value:
            if not name:
                raise forms.ValidationError("Give the header's name.")
            try:
                check_headers({name: value})
            except HeaderRefused as exc:
                raise forms.ValidationError(str(exc)) from exc
        return data


def moment(value: Any) -> datetime | None:
    """A time from a datetime-local field (the server's time zone), or None if it is not one."""
    field = forms.DateTimeField(required=False)
    try:
        return field.clean(value)
    except forms.ValidationError:
        return None


def grace_seconds(value: Any) -> int | None:
    """Hours of grace for a rotated secret (0-168) in seconds, or None if not that."""
    try:
        hours = int(str(value))
    except (TypeError, ValueError):
        return None
    return hours * 3600 if 0 <= hours <= 168 else None


class DeliveryFilter(forms.Form):
    event_type = forms.ChoiceField(label="Event type", required=False)
    status = forms.ChoiceField(
        label="Status", required=False, choices=[("", "any"), *Delivery.Status.choices]
    )
    endpoint = forms.ChoiceField(label="Endpoint", required=False)
    since = forms.DateTimeField(
        label="From", required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    until = forms.DateTimeField(
        label="To", required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )

    def __init__(
        self, *args: Any, catalog: list[EventType], endpoints: QuerySet[Endpoint], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["event_type"].choices = [("", "any"), *((t.name, t.name) for t in catalog)]  # type: ignore[attr-defined]
        self.fields["endpoint"].choices = [  # type: ignore[attr-defined]
            ("", "any"),
            *((e.pk, e.description or e.url) for e in endpoints),
        ]
