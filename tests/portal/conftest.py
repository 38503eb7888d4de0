"""Two applications with the same kinds of objects, and portal sessions opened as a partner
opens them (the link made through the API, its code posted to the link's page)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from deliveries.models import DeadLetter, Delivery, DeliveryAttempt, Event
from schemas_app.services import event_type_create
from webhooks.models import Application, Endpoint
from webhooks.services import endpoint_create


@pytest.fixture(autouse=True)
def _enter_unlimited(settings: Any) -> None:
    """Every test client comes from 127.0.0.1: the tries per address are counted in Redis
    across tests. The rate test sets its own limit, from addresses of its own."""
    settings.WEBHOOKS_PORTAL_ENTER_RATE = (100_000, 60)


@dataclass
class Tenant:
    application: Application
    endpoint: Endpoint
    event: Event
    delivery: Delivery
    attempt: DeliveryAttempt
    dead_letter: DeadLetter


def make_tenant(uid: str, url: str) -> Tenant:
    application = Application.objects.create(uid=uid, name=f"{uid.title()} Inc")
    endpoint, _ = endpoint_create(
        url=url, application=application, description=f"{uid} orders", event_types=["order.paid"]
    )
    event = Event.objects.create(event_type_id="order.paid", data={"n": 1}, application=application)
    now = timezone.now()
    delivery = Delivery.objects.create(
        event=event,
        endpoint=endpoint,
        status="dead",
        attempt_count=1,
        completed_at=now,
        next_attempt_at=None,
        request_body='{"type":"order.paid","data":{"n":1}}',
    )
    attempt = DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        outcome="failed",
        started_at=now,
        duration_ms=12.5,
        status_code=500,
        request_headers={"webhook-id": event.pk, "content-type": "application/json"},
        response_body="upstream broke",
    )
    dead_letter = DeadLetter.objects.create(
        delivery=delivery, endpoint=endpoint, event_type="order.paid", reason="HTTP 500"
    )
    return Tenant(application, endpoint, event, delivery, attempt, dead_letter)


@pytest.fixture
def tenants(db: None) -> tuple[Tenant, Tenant]:
    event_type_create(
        name="order.paid", schema={"type": "object"}, description="An order was paid."
    )
    return (
        make_tenant("acme", "http://127.0.0.1:9/acme"),
        make_tenant("globex", "http://127.0.0.1:9/globex"),
    )


def link(api: Any, uid: str, **body: Any) -> str:
    """A portal link made through the API; its code (after `#`)."""
    answer = api.post(f"/api/v1/applications/{uid}/portal-access/", body, format="json")
    assert answer.status_code == 201, answer.content
    url = answer.json()["url"]
    assert "/portal/enter/#wpt_" in url
    return str(url.split("#", 1)[1])


@pytest.fixture
def open_portal(make_api_client: Callable[..., Any]) -> Callable[..., Client]:
    """A browser (test client) with a portal session of `uid`, `rights` read or manage."""

    def opened(uid: str, rights: str = "manage", **client_options: Any) -> Client:
        code = link(make_api_client(["endpoints:manage"]), uid, rights=rights)
        browser = Client(**client_options)
        if client_options.get("enforce_csrf_checks"):
            page = browser.get("/portal/enter/")
            csrf = page.cookies["csrftoken"].value
            answer = browser.post("/portal/enter/", {"token": code, "csrfmiddlewaretoken": csrf})
        else:
            answer = browser.post("/portal/enter/", {"token": code})
        assert answer.status_code == 302, answer.content
        assert answer["Location"] == "/portal/"
        return browser

    return opened
