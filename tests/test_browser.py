"""The admin in a real browser: Playwright driving Debian's Chromium against gunicorn.

Chromium is installed with apt-get where it is missing and we are root; the tests skip, saying
why, only when it cannot be installed. Screenshots go to a temporary directory, or to
`docs/screenshots/` with `make screenshots` (SCREENSHOTS_DIR), for the README.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from django.utils import timezone

from deliveries import metrics
from deliveries.models import DeadLetter, Delivery, DeliveryAttempt, Event
from schemas_app.services import event_type_create
from tests.conftest import BASE_DIR, WebServer, worker_env
from webhooks.services import application_create, endpoint_create

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # the closed network refuses Chromium's own calls
    "--disable-component-update",
    "--disable-sync",
]


def _install_chromium() -> str | None:
    """Install Debian's chromium if it is missing; None when it is there, else why not."""
    if CHROMIUM.exists():
        return None
    if shutil.which("apt-get") is None:
        return "no /usr/bin/chromium and no apt-get to install it"
    if os.geteuid() != 0:
        return "no /usr/bin/chromium, and installing it needs root (apt-get install chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    reason = "apt-get install chromium left no /usr/bin/chromium"
    for commands in ([install], [["apt-get", "update", "-q"], install]):
        try:
            for command in commands:
                subprocess.run(command, env=env, check=True, capture_output=True, timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            output = getattr(exc, "stderr", b"") or b""
            reason = f"apt-get could not install chromium: {output.decode()[-300:]}"
            continue
        if CHROMIUM.exists():
            return None
    return reason


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    reason = _install_chromium()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, and Django refuses ORM
    # calls where a loop runs. The test's own ORM calls are plain synchronous ones; the server
    # is a separate process.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
            # With Playwright's loop running, asgiref gives the test its own database
            # connection (not the one pytest-django closes); close it, or it keeps the test
            # database open.
            connections.close_all()


@pytest.fixture
def web(transactional_db: None) -> Iterator[WebServer]:
    """The real web server (gunicorn, static files by WhiteNoise) on the test database."""
    server = WebServer(worker_env()).start()
    yield server
    server.stop()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    if not directory.is_absolute():
        directory = BASE_DIR / directory
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _seed() -> DeadLetter:
    """An operator's morning: a day of traffic to three endpoints, one of them failing since
    an hour ago, and a delivery of it in the dead-letter queue."""
    User = get_user_model()
    User.objects.create_superuser("operator", "op@example.com", "correct-horse-battery")
    event_type_create(name="order.created", schema={"type": "object"})
    acme = application_create(uid="acme", name="Acme")
    shop, _ = endpoint_create(url="http://127.0.0.1:9/shop", application=acme)
    erp, _ = endpoint_create(url="http://127.0.0.1:9/erp", application=acme)
    crm, _ = endpoint_create(url="http://127.0.0.1:9/crm", application=acme)
    now = timezone.now()
    for minutes_ago in range(0, 24 * 60, 7):
        deltas = metrics.Deltas()
        wave = 1 + (minutes_ago // 60) % 5
        for endpoint, latency in ((shop, 45.0), (erp, 140.0)):
            for i in range(wave + 3):
                deltas.of(endpoint.pk, "order.created").attempt(latency * 0.6)
                deltas.of(endpoint.pk, "order.created").success(latency + 9 * i)
        crm_delta = deltas.of(crm.pk, "order.created")
        if minutes_ago < 60:
            crm_delta.retried, crm_delta.dead, crm_delta.dead_lettered = 3, 1, 1
        else:
            crm_delta.success(300.0)
        metrics.stats_add(deltas, at=now - timedelta(minutes=minutes_ago))
    accepted = now - timedelta(minutes=10)
    event = Event.objects.create(
        event_type_id="order.created", application=acme, data={"id": 7}, created_at=accepted
    )
    ended = accepted + timedelta(seconds=5.2)
    delivery = Delivery.objects.create(
        event=event,
        endpoint=crm,
        status="dead",
        attempt_count=2,
        completed_at=ended,
        next_attempt_at=None,
        dispatched_at=None,
        last_attempt_at=accepted + timedelta(seconds=5.1),
        last_status_code=503,
    )
    body = '{"type":"order.created","timestamp":"2026-11-27T08:00:00Z","data":{"id":7}}'
    for number, outcome in ((1, "retrying"), (2, "failed")):
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=number,
            outcome=outcome,
            started_at=accepted + timedelta(seconds=0.02 + 5 * (number - 1)),
            duration_ms=31.0,
            status_code=503,
            request_body=body,
            request_body_bytes=len(body),
            response_body='{"error": "maintenance"}',
        )
    return DeadLetter.objects.create(
        delivery=delivery,
        endpoint=crm,
        event_type="order.created",
        reason="HTTP 503 after 2 attempts",
        last_status_code=503,
        created_at=ended,
    )


@pytest.mark.django_db(transaction=True)
def test_an_operator_logs_in_reads_the_dashboard_and_replays_a_dead_letter(
    web: WebServer, browser: Any, screenshots: Path
) -> None:
    _operator_session(web, browser, screenshots)


def _log_in(page: Any, web: WebServer) -> None:
    """The operator `_seed` made signs in; the admin's index is shown."""
    page.goto(f"{web.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "correct-horse-battery")
    page.click("input[type=submit]")
    page.wait_for_selector("#dashboard-link")


def _operator_session(web: WebServer, browser: Any, screenshots: Path) -> None:
    dead_letter = _seed()
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    try:
        _log_in(page, web)
        # the dashboard: numbers, charts, the failing endpoint first
        page.click("#dashboard-link a")
        page.wait_for_selector("#card-success-rate")
        assert page.locator("svg.chart").count() == 3
        assert page.locator("#card-dead-letters .value").inner_text().strip() == "1"
        first_row = page.locator("#endpoint-table tbody tr").first.inner_text()
        assert "/crm" in first_row
        page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)
        page.click("a[data-window='1h']")
        page.wait_for_url("**/admin/metrics/?window=1h")
        # the failed delivery's timeline
        page.goto(f"{web.url}/admin/deliveries/delivery/{dead_letter.delivery_id}/change/")
        page.wait_for_selector("#delivery-timeline")
        assert page.locator("#delivery-timeline li.attempt").count() == 2
        page.screenshot(path=str(screenshots / "delivery-timeline.png"), full_page=True)
        # replay the dead letter from the admin
        page.goto(f"{web.url}/admin/deliveries/deadletter/")
        page.check(f"input[name=_selected_action][value='{dead_letter.pk}']")
        page.select_option("select[name=action]", "replay_selected")
        page.click("button[name=index]")
        page.wait_for_selector("ul.messagelist")
        assert "Replayed 1 deliveries" in page.locator("ul.messagelist").inner_text()
        page.screenshot(path=str(screenshots / "dead-letters-replayed.png"), full_page=True)
        page.goto(f"{web.url}/admin/webhooks/endpoint/")
        page.wait_for_selector("#result_list")
        page.screenshot(path=str(screenshots / "endpoints.png"), full_page=True)
    finally:
        page.close()
    dead_letter.refresh_from_db()
    assert dead_letter.replayed_by == "admin:operator"
    assert Delivery.objects.get(pk=dead_letter.delivery_id).status == "pending"
    for name in ("dashboard", "delivery-timeline", "dead-letters-replayed", "endpoints"):
        assert (screenshots / f"{name}.png").stat().st_size > 10_000


LIST_PAGES = ("webhooks/endpoint", "deliveries/delivery", "deliveries/deadletter")


@pytest.mark.django_db(transaction=True)
def test_the_list_pages_fit_a_1280_pixel_screen(
    web: WebServer, browser: Any, screenshots: Path
) -> None:
    _lists_at_1280(web, browser, screenshots)


def _lists_at_1280(web: WebServer, browser: Any, screenshots: Path) -> None:
    dead_letter = _seed()
    # long texts, as operators have them: a long URL and description, a long failure reason
    endpoint_create(
        url="https://hooks.partner-with-a-long-name.example.com/api/v2/webhooks/incoming/orders"
        "?tenant=7f3c2a9e-1b4d-4c8e-9f0a-123456789abc&signature_version=2",
        description="Partner X's order webhook, production, routed through their EU gateway",
    )
    DeadLetter.objects.filter(pk=dead_letter.pk).update(
        reason="HTTP 503 after 12 attempts: upstream maintenance window, the consumer answered "
        "Service Unavailable with a Retry-After of 3600 seconds each time"
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        _log_in(page, web)
        for model in LIST_PAGES:
            page.goto(f"{web.url}/admin/{model}/")
            page.wait_for_selector("#result_list")
            # the page, and the table inside its container (the admin scrolls that one)
            overflow = page.evaluate(
                """() => Math.max(
                    document.documentElement.scrollWidth - document.documentElement.clientWidth,
                    document.querySelector('#result_list').scrollWidth
                        - document.querySelector('#result_list').parentElement.clientWidth)"""
            )
            name = model.split("/")[1]
            page.screenshot(path=str(screenshots / f"list-{name}-1280.png"), full_page=True)
            assert overflow <= 0, f"{model} scrolls sideways by {overflow} px at 1280 px"
            # a clipped text keeps its whole value on hover
            if model == "deliveries/deadletter":
                reason = page.locator("#result_list span[title*='Retry-After']")
                assert reason.count() == 1
    finally:
        page.close()
