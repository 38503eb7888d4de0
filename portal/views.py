"""The portal's pages: server-rendered, no JavaScript needed (one line fills the link's code in),
no CDN. Each reads through the session's `Portal` (scope.py); each POST needs `manage` rights
and Django's CSRF token."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from audit import chain as audit
from deliveries import metrics_reading
from deliveries.admin import delivery_timeline
from deliveries.dashboard import _charts, endpoint_rows
from deliveries.services.dead_letters import dead_letters_replay
from deliveries.services.endpoints import (
    EndpointNotSendable,
    endpoint_disable,
    endpoint_enable,
    endpoint_send_test,
)
from deliveries.services.resend import NotNow, delivery_resend
from schemas_app.models import EventType
from schemas_app.services import outbound_schema
from webhooks import signing
from webhooks.headers import MASK
from webhooks.models import Endpoint
from webhooks.selectors import endpoint_active_secrets
from webhooks.services import (
    endpoint_create,
    endpoint_delete,
    endpoint_secret_rotate,
    endpoint_update,
)
from webhooks.throttling import window_allows
from webhooks_project.paging import EstimatedCountPaginator

from . import forms, guide
from .scope import COOKIE, frame_headers, portal_of, portal_page
from .services import AccessRefused, access_redeem, session_end, session_find

PAGE = 50


def _client(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))


SECTIONS = {
    "overview.html": "overview",
    "endpoints.html": "endpoints",
    "endpoint.html": "endpoints",
    "secret.html": "endpoints",
    "deliveries.html": "deliveries",
    "delivery.html": "deliveries",
    "event.html": "deliveries",
    "dead_letters.html": "dead_letters",
    "catalog.html": "catalog",
}


def brand(application: Any = None) -> dict[str, str]:
    """The portal's name, logo and accent: the application's own where it has them (only once
    a session says which application it is), else the settings'."""
    return {
        "name": getattr(application, "portal_name", "") or settings.WEBHOOKS_PORTAL_NAME,
        "logo_url": getattr(application, "portal_logo_url", "")
        or settings.WEBHOOKS_PORTAL_LOGO_URL,
        "accent": getattr(application, "portal_accent", "") or settings.WEBHOOKS_PORTAL_ACCENT,
    }


def _render(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    portal = getattr(request, "portal", None)
    context = {
        **context,
        "brand": brand(portal.application if portal is not None else None),
        "portal": portal,
        "section": SECTIONS.get(template, ""),
    }
    return render(request, f"portal/{template}", context, status=status)


# --- entering and leaving ---------------------------------------------------------------------


def enter(request: HttpRequest) -> HttpResponse:
    """The link's page: GET shows one button (a mail scanner that fetches the link opens
    nothing); POST exchanges the code for a session (rate-limited per client address)."""
    if request.method != "POST":
        return frame_headers(_render(request, "enter.html", {}))
    limit, window = settings.WEBHOOKS_PORTAL_ENTER_RATE  # never off (settings refuse it)
    wait = window_allows(f"portal-enter:{_client(request)}", limit, window)
    if wait:
        response = _render(
            request, "enter.html", {"error": "Too many tries: wait a minute, then try again."}, 429
        )
        response["Retry-After"] = str(int(wait) + 1)
        return frame_headers(response)
    token = str(request.POST.get("token", "")).strip()
    try:
        opened = access_redeem(token=token, client=_client(request))
    except AccessRefused as exc:
        return frame_headers(_render(request, "enter.html", {"error": str(exc)}, 400))
    response = redirect("portal:overview")
    embedded = bool(settings.WEBHOOKS_PORTAL_FRAME_ANCESTORS)
    response.set_cookie(
        COOKIE,
        opened.session_key,
        max_age=opened.session.access.session_seconds,
        path=reverse("portal:overview"),
        httponly=True,
        # as the admin's session cookie (Secure outside dev), and always when framed
        secure=settings.SESSION_COOKIE_SECURE or request.is_secure() or embedded,
        samesite="None" if embedded else "Lax",  # in a frame of another site: a third party's
    )
    return response


def signed_out(request: HttpRequest) -> HttpResponse:
    return frame_headers(_render(request, "signed_out.html", {}, 401))


@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    session = session_find(request.COOKIES.get(COOKIE))
    if session is not None:
        session_end(session)
    response = redirect("portal:signed-out")
    response.delete_cookie(COOKIE, path=reverse("portal:overview"))
    return response


# --- overview ---------------------------------------------------------------------------------


@portal_page()
def overview(request: HttpRequest) -> HttpResponse:
    portal = portal_of(request)
    window = request.GET.get("window", "24h")
    if window not in metrics_reading.WINDOWS:
        window = "24h"
    ids = portal.endpoint_ids
    scope = dataclasses.replace(
        metrics_reading.window_scope(window, now=timezone.now()), endpoint_ids=ids
    )
    points = metrics_reading.series(scope, metrics_reading.STEPS[window])
    summary = metrics_reading.total(points)
    return _render(
        request,
        "overview.html",
        {
            "window": window,
            "windows": list(metrics_reading.WINDOWS),
            "summary": summary,
            "charts": _charts(points, window),
            "endpoints": endpoint_rows(scope)[:20],
            "dead_letters": portal.dead_letters().filter(replayed_at__isnull=True).count(),
            "endpoint_count": len(ids),
        },
    )


# --- endpoints --------------------------------------------------------------------------------


def _catalog() -> list[EventType]:
    return list(EventType.objects.filter(archived=False).order_by("name"))


def _form_errors(form: forms.forms.Form, exc: ValidationError) -> None:
    """The service's errors on the form's fields (the rest, and errors of no field, on the
    form)."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for field, messages_ in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, messages_)


@portal_page()
def endpoints(request: HttpRequest) -> HttpResponse:
    portal = portal_of(request)
    catalog = _catalog()
    form = forms.EndpointForm(request.POST or None, catalog=catalog)
    if request.method == "POST" and form.is_valid():
        try:
            endpoint, _ = endpoint_create(
                actor=portal.actor, application=portal.application, **form.endpoint_fields()
            )
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, "Endpoint created. Its signing secret is on its page.")
            return redirect("portal:endpoint", endpoint_id=endpoint.pk)
    return _render(
        request,
        "endpoints.html",
        {"endpoints": portal.endpoints(), "form": form, "catalog": catalog},
        status=400 if form.errors else 200,
    )


@portal_page()
def endpoint(request: HttpRequest, endpoint_id: str) -> HttpResponse:
    portal = portal_of(request)
    found = portal.endpoint(endpoint_id)
    catalog = _catalog()
    initial = {
        "url": found.url,
        "description": found.description,
        "event_types": found.event_types,
        "rate_limit_per_second": found.rate_limit_per_second,
    }
    form = forms.EndpointForm(
        request.POST or None, initial=initial, catalog=catalog, endpoint=found
    )
    if request.method == "POST" and form.is_valid():
        try:
            endpoint_update(endpoint=found, actor=portal.actor, **form.endpoint_fields())
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, "Endpoint saved.")
            return redirect("portal:endpoint", endpoint_id=found.pk)
    return _render(
        request,
        "endpoint.html",
        {
            "endpoint": found,
            "form": form,
            "headers": dict.fromkeys(found.headers or {}, MASK),
            "deliveries": portal.deliveries().filter(endpoint=found).select_related("event")[:20],
            "ed25519": found.signature_scheme == Endpoint.SignatureScheme.ED25519,
        },
        status=400 if form.errors else 200,
    )


@require_POST
@portal_page(write=True)
def endpoint_action(request: HttpRequest, endpoint_id: str, action: str) -> HttpResponse:
    """The endpoint page's buttons: secret, rotate, test, disable, enable, delete."""
    portal = portal_of(request)
    found = portal.endpoint(endpoint_id)
    here = redirect("portal:endpoint", endpoint_id=found.pk)
    if action == "secret":
        active = endpoint_active_secrets(endpoint_id=found.pk)
        audit.record(  # who has seen a secret is worth knowing when one leaks
            actor=portal.actor,
            action="endpoint.secret_revealed",
            object_type="endpoint",
            object_id=found.pk,
            application=portal.application.uid,
        )
        return _render(
            request,
            "secret.html",
            {"endpoint": found, **_credentials(active[0] if active else None)},
        )
    if action == "rotate":
        grace = forms.grace_seconds(request.POST.get("grace_hours"))
        if grace is None:
            messages.error(request, "Grace: give whole hours from 0 to 168.")
            return here
        rotated = endpoint_secret_rotate(endpoint=found, grace_seconds=grace, actor=portal.actor)
        return _render(
            request,
            "secret.html",
            {"endpoint": found, **_credentials(rotated.secret), "rotated": rotated},
        )
    if action == "test":
        try:
            sent = endpoint_send_test(endpoint_id=found.pk, actor=portal.actor)
        except EndpointNotSendable as exc:
            messages.error(request, f"Not sent: {exc}.")
            return here
        messages.success(request, "Test event sent.")
        return redirect("portal:delivery", delivery_id=sent.delivery_id)
    if action == "disable":
        endpoint_disable(endpoint_id=found.pk, reason="disabled in the portal", actor=portal.actor)
        messages.success(request, "Endpoint disabled: nothing is sent to it until enabled.")
        return here
    if action == "enable":
        replay = request.POST.get("replay_missed") == "on"
        result = endpoint_enable(endpoint_id=found.pk, actor=portal.actor, replay_missed=replay)
        messages.success(
            request,
            f"Endpoint enabled; {result.replayed} dead letters replayed, "
            f"{result.backfilled} missed events sent."
            if replay
            else "Endpoint enabled.",
        )
        return here
    if action == "delete":
        endpoint_delete(endpoint=found, actor=portal.actor)
        messages.success(request, "Endpoint deleted.")
        return redirect("portal:endpoints")
    if action == "headers":
        form = forms.HeaderForm(request.POST)
        if not form.is_valid():
            messages.error(
                request, " ".join(str(e) for errors in form.errors.values() for e in errors)
            )
            return here
        headers = dict(found.headers or {})
        for name in request.POST.getlist("remove"):
            headers.pop(name, None)
        name = form.cleaned_data["name"]
        if name:  # replaces the header of that name, whatever its case
            headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
            headers[name] = form.cleaned_data["value"]
        try:
            endpoint_update(endpoint=found, actor=portal.actor, headers=headers)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, "Headers saved.")
        return here
    raise Http404("No such action.")


def _credentials(secret: str | None) -> dict[str, str | None]:
    """What the partner verifies with: the whsec_ secret, or an Ed25519 endpoint's whpk_ public
    key (its private key never leaves the service)."""
    public = signing.public_key(secret) if secret else None
    return {"secret": None if public else secret, "public_key": public}


# --- deliveries and dead letters --------------------------------------------------------------


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


@portal_page()
def deliveries(request: HttpRequest) -> HttpResponse:
    portal = portal_of(request)
    form = forms.DeliveryFilter(
        request.GET or None, catalog=_catalog(), endpoints=portal.endpoints()
    )
    rows = portal.deliveries().select_related("event", "endpoint")
    if form.is_valid():
        data = form.cleaned_data
        if data["event_type"]:
            rows = rows.filter(event__event_type_id=data["event_type"])
        if data["status"]:
            rows = rows.filter(status=data["status"])
        if data["endpoint"]:
            rows = rows.filter(endpoint_id=data["endpoint"])
        if data["since"]:
            rows = rows.filter(created_at__gte=data["since"])
        if data["until"]:
            rows = rows.filter(created_at__lt=data["until"])
    page = EstimatedCountPaginator(rows, PAGE).get_page(request.GET.get("page"))
    return _render(request, "deliveries.html", {"form": form, "page": page})


@portal_page()
def delivery(request: HttpRequest, delivery_id: str) -> HttpResponse:
    portal = portal_of(request)
    found = portal.delivery(delivery_id)
    return _render(
        request,
        "delivery.html",
        {"delivery": found, "timeline": delivery_timeline(found)},
    )


@portal_page()
def event(request: HttpRequest, event_id: str) -> HttpResponse:
    """An event's deliveries to this application's endpoints (its data as accepted is never
    shown: a partner sees what was sent to it, after transformation and masking)."""
    portal = portal_of(request)
    found = portal.event(event_id)
    rows = (
        portal.deliveries()
        .of_events([found.pk])
        .select_related("event", "endpoint")
        .order_by("endpoint_id")
    )
    return _render(request, "event.html", {"event": found, "deliveries": rows})


@require_POST
@portal_page(write=True)
def delivery_resend_view(request: HttpRequest, delivery_id: str) -> HttpResponse:
    portal = portal_of(request)
    found = portal.delivery(delivery_id)
    try:
        delivery_resend(delivery_id=found.pk, actor=portal.actor)
    except NotNow as exc:  # in flight, or its endpoint disabled: said on the page
        messages.error(request, f"Not resent: {exc}.")
    else:
        messages.success(request, "Sent again: a new attempt is on its way.")
    return redirect("portal:delivery", delivery_id=found.pk)


@portal_page()
def dead_letters(request: HttpRequest) -> HttpResponse:
    portal = portal_of(request)
    rows = portal.dead_letters().filter(replayed_at__isnull=True, skipped=False)
    endpoint_id = request.GET.get("endpoint") or ""
    if endpoint_id:
        rows = rows.filter(endpoint_id=endpoint_id)
    event_type = request.GET.get("event_type") or ""
    if event_type:
        rows = rows.filter(event_type=event_type)
    since = forms.moment(request.GET.get("since"))
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    page = EstimatedCountPaginator(rows.select_related("endpoint"), PAGE).get_page(
        request.GET.get("page")
    )
    return _render(
        request,
        "dead_letters.html",
        {
            "page": page,
            "endpoint_id": endpoint_id,
            "endpoints": portal.endpoints(),
            "event_type": event_type,
            "since": request.GET.get("since", "") if since is not None else "",
            "catalog": _catalog(),
        },
    )


@require_POST
@portal_page(write=True)
def dead_letters_replay_view(request: HttpRequest) -> HttpResponse:
    """Replay one dead letter (`dead_letter`) or every waiting one of an endpoint (`endpoint`)."""
    portal = portal_of(request)
    if request.POST.get("dead_letter"):
        chosen = portal.dead_letters().filter(pk=portal.dead_letter(request.POST["dead_letter"]).pk)
    else:
        chosen = portal.dead_letters().filter(
            endpoint=portal.endpoint(request.POST.get("endpoint", ""))
        )
    result = dead_letters_replay(dead_letters=chosen, actor=portal.actor)
    messages.success(request, f"{result.replayed} replayed.")
    return redirect("portal:dead-letters")


# --- the catalog ------------------------------------------------------------------------------


@portal_page()
def catalog(request: HttpRequest) -> HttpResponse:
    types = [
        {
            "type": event_type,
            "schema": _pretty(outbound_schema(event_type)),
            "example": _pretty(event_type.example) if event_type.example is not None else "",
        }
        for event_type in _catalog()
    ]
    return _render(
        request,
        "catalog.html",
        {"types": types, "guide": guide.verification()},
    )
