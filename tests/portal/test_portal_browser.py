"""The partner portal in a real browser (Playwright driving Debian's Chromium, like
tests/test_browser.py) against gunicorn and the session's worker: a partner opens a link,
creates an endpoint on the local sink, sends a test event and watches it arrive, opens its
attempt, rotates the secret, replays a dead letter, and finds another application's delivery
404. At 1024 px wide, no page scrolls sideways. Screenshots: docs/screenshots/portal-*.png with
`make screenshots`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from deliveries.models import DeadLetter, Delivery, Event
from portal.services import access_create
from schemas_app.services import event_type_create
from tests.conftest import WebServer, WorkerProcess, wait_until, worker_env
from tests.sink import Sink
from tests.test_browser import browser, screenshots  # noqa: F401 - fixtures
from webhooks.models import Application
from webhooks.services import endpoint_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web(transactional_db: None) -> Iterator[WebServer]:
    """gunicorn on the test database. The tries at link codes are counted per address in the
    session's Redis, which the other portal tests' clients (127.0.0.1 too) have counted into."""
    server = WebServer(worker_env(WEBHOOKS_PORTAL_ENTER_RATE="100000/min")).start()
    yield server
    server.stop()


def _dead(application: Application, url: str, description: str) -> Delivery:
    endpoint, _ = endpoint_create(
        url=url, application=application, description=description, event_types=["order.paid"]
    )
    event = Event.objects.create(
        event_type_id="order.paid", data={"order": "o-1"}, application=application
    )
    delivery = Delivery.objects.create(
        event=event,
        endpoint=endpoint,
        status="dead",
        attempt_count=1,
        completed_at=timezone.now(),
        next_attempt_at=None,
    )
    DeadLetter.objects.create(
        delivery=delivery, endpoint=endpoint, event_type="order.paid", reason="HTTP 503"
    )
    return delivery


def _no_sideways_scroll(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


_UNLABELLED = """
[...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map(e => e.outerHTML.slice(0, 120))
"""


def _usable(page: Any) -> None:
    """At 1024 px: nothing scrolls sideways, and every control has a name a screen reader says."""
    assert _no_sideways_scroll(page), page.url
    assert page.evaluate(_UNLABELLED) == [], page.url


def test_a_partner_manages_its_webhooks_in_the_portal(
    web: WebServer,
    browser: Any,  # noqa: F811
    screenshots: Path,  # noqa: F811
    celery_worker: WorkerProcess,
    sink: Sink,
) -> None:
    event_type_create(
        name="order.paid",
        schema={"type": "object", "required": ["order"]},
        description="An order was paid.",
        example={"order": "o-1"},
    )
    acme = Application.objects.create(uid="acme", name="Acme Inc")
    globex = Application.objects.create(uid="globex", name="Globex")
    replayable = _dead(acme, sink.url("acme-old"), "old endpoint")
    theirs = _dead(globex, sink.url("globex"), "globex endpoint")
    made = access_create(application=acme, rights="manage", actor="test")
    page = browser.new_page(viewport={"width": 1024, "height": 800})
    try:
        # the link: its page, one button
        page.goto(f"{web.url}/portal/enter/#{made.token}")
        page.get_by_role("button", name="Open the portal").click()
        page.wait_for_url(f"{web.url}/portal/")
        assert page.get_by_role("heading", name="Acme Inc: webhooks overview").is_visible()
        _usable(page)

        # a new endpoint on the sink, subscribed from the catalog
        page.get_by_role("link", name="Endpoints").click()
        page.get_by_label("URL").fill(sink.url("portal"))
        page.get_by_label("Description").fill("Acme's order service")
        page.get_by_label("order.paid").check()
        page.get_by_role("button", name="Add endpoint").click()
        assert page.get_by_role("heading", name="Endpoint Acme's order service").is_visible()
        _usable(page)
        page.screenshot(path=str(screenshots / "portal-endpoint.png"), full_page=True)

        # a test event: it arrives, and its attempt shows what was sent and answered
        page.get_by_role("button", name="Send a test event").click()
        page.wait_for_url("**/portal/deliveries/*/")
        (received,) = sink.wait_for(1, "portal", timeout=30)
        wait_until(lambda: Delivery.objects.filter(status="succeeded").exists(), timeout=30)
        page.reload()
        assert page.get_by_role("heading", name="Attempt 1: Succeeded").is_visible()
        assert received.body.decode() in page.content().replace("&quot;", '"')
        _usable(page)
        page.screenshot(path=str(screenshots / "portal-attempt.png"), full_page=True)

        # the secret, rotated with a day's grace
        page.get_by_role("link", name=sink.url("portal")).click()
        page.get_by_label("Rotate; the current one keeps signing for").select_option("24")
        page.get_by_role("button", name="Rotate").click()
        secret = page.get_by_label("Secret (keep it private)").input_value()
        assert secret.startswith("whsec_")
        assert page.get_by_text("keeps signing until").is_visible()

        # a dead letter replayed
        page.get_by_role("link", name="Dead letters").click()
        assert page.get_by_text("HTTP 503").is_visible()
        _usable(page)
        page.screenshot(path=str(screenshots / "portal-dead-letters.png"), full_page=True)
        page.get_by_role("button", name="Replay").first.click()
        assert page.get_by_text("1 replayed.").is_visible()
        wait_until(lambda: DeadLetter.objects.get(delivery=replayable).replayed_at is not None)

        # the catalog, and the way to verify
        page.get_by_role("link", name="Event catalog").click()
        assert page.get_by_role("heading", name="order.paid").is_visible()
        _usable(page)
        page.screenshot(path=str(screenshots / "portal-catalog.png"), full_page=True)

        # the deliveries, searched by status
        page.get_by_role("link", name="Deliveries").click()
        page.get_by_label("Status").select_option("succeeded")
        page.get_by_role("button", name="Search").click()
        assert page.get_by_role("cell", name="webhook.test").is_visible()
        _usable(page)
        page.screenshot(path=str(screenshots / "portal-deliveries.png"), full_page=True)

        # another application's delivery: not found
        answer = page.goto(f"{web.url}/portal/deliveries/{theirs.pk}/")
        assert answer is not None
        assert answer.status == 404

        # the overview now has deliveries to show: the test event, the replayed one
        wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 2, timeout=30)
        page.goto(f"{web.url}/portal/?window=1h")
        assert page.get_by_text("2 of 2 finished").is_visible()
        page.screenshot(path=str(screenshots / "portal-overview.png"), full_page=True)

        # the keyboard: the first Tab reaches "Skip to content"
        page.goto(f"{web.url}/portal/")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    finally:
        page.close()
