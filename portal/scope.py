"""What a portal session can reach: its application's objects, nothing else.

Every page reads through a `Portal`, whose querysets start from the application: an object of
another application is not found (404), the same answer as one that does not exist, so ids
reveal nothing. Writes need a session opened with `manage` rights (403 otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from deliveries.models import DeadLetter, Delivery, DeliveryQuerySet, Event
from webhooks.models import Application, Endpoint

from .models import PortalSession
from .services import session_find

COOKIE = "webhooks_portal"


@dataclass(frozen=True)
class Portal:
    session: PortalSession

    @property
    def application(self) -> Application:
        return self.session.access.application

    @property
    def manage(self) -> bool:
        return self.session.access.manage

    @property
    def actor(self) -> str:
        """Who the audit log says did it: the portal link's id (its creator is recorded)."""
        return f"portal:{self.session.access_id}"

    def endpoints(self) -> QuerySet[Endpoint]:
        return Endpoint.objects.filter(application=self.application).order_by("created_at")

    def endpoint(self, endpoint_id: str) -> Endpoint:
        found = self.endpoints().filter(pk=endpoint_id).first()
        if found is None:
            raise Http404("No such endpoint.")
        return found

    @cached_property
    def endpoint_ids(self) -> list[str]:
        """Read once per request (cached_property writes past the frozen dataclass)."""
        return list(self.endpoints().values_list("id", flat=True))

    def deliveries(self) -> DeliveryQuerySet:
        """By the application's endpoint ids, not a join: each day partition's (endpoint, -id)
        index then gives a page of the newest without reading the rest."""
        return Delivery.objects.filter(endpoint_id__in=self.endpoint_ids).order_by("-id")

    def delivery(self, delivery_id: str | int) -> Delivery:
        try:
            number = int(delivery_id)
        except (TypeError, ValueError):
            raise Http404("No such delivery.") from None
        found = self.deliveries().filter(pk=number).select_related("event", "endpoint").first()
        if found is None:
            raise Http404("No such delivery.")
        return found

    def dead_letters(self) -> QuerySet[DeadLetter]:
        return DeadLetter.objects.filter(endpoint_id__in=self.endpoint_ids).order_by("-id")

    def dead_letter(self, dead_letter_id: str | int) -> DeadLetter:
        number = _id(dead_letter_id, "dead letter")
        found = self.dead_letters().filter(pk=number).select_related("endpoint").first()
        if found is None:
            raise Http404("No such dead letter.")
        return found

    def event(self, event_id: str) -> Event:
        """An event that was delivered to one of the application's endpoints."""
        found = Event.objects.filter(pk=event_id).first()
        if found is None or not self.deliveries().of_events([event_id]).exists():
            raise Http404("No such event.")
        return found


BIGINT = 2**63 - 1


def _id(value: str | int, what: str) -> int:
    """A row id from a URL: anything but a whole number a bigint holds is not found."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise Http404(f"No such {what}.") from None
    if not 0 < number <= BIGINT:
        raise Http404(f"No such {what}.")
    return number


def portal_of(request: HttpRequest) -> Portal:
    portal = getattr(request, "portal", None)
    assert isinstance(portal, Portal), "a portal page is wrapped in portal_page"
    return portal


def portal_page(*, write: bool = False) -> Callable[[Callable[..., HttpResponse]], Any]:
    """A page of the portal: it needs a live session (else the sign-in page), and with `write`
    (every POST it answers) a session with `manage` rights."""

    def wrap(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def page(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            session = session_find(request.COOKIES.get(COOKIE))
            if session is None:
                return redirect("portal:signed-out")
            portal = Portal(session)
            if (write or request.method == "POST") and not portal.manage:
                raise PermissionDenied("This portal session can read, not change.")
            request.portal = portal  # type: ignore[attr-defined]
            response = view(request, *args, **kwargs)
            return frame_headers(response)

        return page

    return wrap


def link_url(request: HttpRequest, token: str) -> str:
    """The portal link a partner is given: the link's page, the code after `#` (browsers never
    send a fragment, so no server log keeps it)."""
    return request.build_absolute_uri(reverse("portal:enter")) + "#" + token


def frame_headers(response: HttpResponse) -> HttpResponse:
    """Who may show the portal in a frame: WEBHOOKS_PORTAL_FRAME_ANCESTORS (none by default)."""
    ancestors = settings.WEBHOOKS_PORTAL_FRAME_ANCESTORS
    if ancestors:
        response["Content-Security-Policy"] = "frame-ancestors 'self' " + " ".join(ancestors)
        response.xframe_options_exempt = True
    else:
        response["Content-Security-Policy"] = "frame-ancestors 'none'"
    return response
