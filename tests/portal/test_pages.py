"""The portal's pages: scoped to the session's application (every object of another one is a
404), read-only sessions cannot write, partner text is escaped, endpoints are checked as the
API checks them, and each page does what it says."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client

from audit.models import AuditRecord
from deliveries.models import DeadLetter, Delivery
from portal import guide
from tests.portal.conftest import Tenant
from webhooks import signing
from webhooks.models import Endpoint

pytestmark = pytest.mark.django_db


def _urls(tenant: Tenant) -> list[tuple[str, str]]:
    """Every page and action that names one of the tenant's objects: (method, path)."""
    ep, d, dl = tenant.endpoint.pk, tenant.delivery.pk, tenant.dead_letter.pk
    return [
        ("GET", f"/portal/endpoints/{ep}/"),
        ("POST", f"/portal/endpoints/{ep}/"),
        *(
            ("POST", f"/portal/endpoints/{ep}/{action}/")
            for action in ("secret", "rotate", "test", "disable", "enable", "delete", "headers")
        ),
        ("GET", f"/portal/deliveries/{d}/"),
        ("GET", f"/portal/events/{tenant.event.pk}/"),
        ("POST", f"/portal/deliveries/{d}/resend/"),
        ("POST", "/portal/dead-letters/replay/?dead_letter=" + str(dl)),
    ]


def _send(browser: Client, method: str, path: str) -> Any:
    if method == "GET":
        return browser.get(path)
    if "?" in path:  # the replay form posts its fields
        path, query = path.split("?", 1)
        name, value = query.split("=", 1)
        return browser.post(path, {name: value, "grace_hours": "1"})
    return browser.post(path, {"grace_hours": "1", "url": "http://127.0.0.1:9/x"})


def test_every_object_of_another_application_is_not_found(
    tenants: tuple[Tenant, Tenant], open_portal: Any
) -> None:
    acme, globex = tenants
    browser = open_portal("acme")
    for method, path in _urls(globex):
        assert _send(browser, method, path).status_code == 404, (method, path)
    # the dead letters of another application's endpoint cannot be replayed by endpoint either
    assert (
        browser.post("/portal/dead-letters/replay/", {"endpoint": globex.endpoint.pk}).status_code
        == 404
    )
    # and its objects never appear in this application's lists
    for path in ("/portal/", "/portal/endpoints/", "/portal/deliveries/", "/portal/dead-letters/"):
        page = browser.get(path).content.decode()
        assert globex.endpoint.pk not in page, path
        assert globex.endpoint.url not in page, path
        assert globex.event.pk not in page, path
    assert browser.get(f"/portal/deliveries/?endpoint={globex.endpoint.pk}").status_code == 200
    # nothing of globex changed
    globex.endpoint.refresh_from_db()
    assert globex.endpoint.enabled
    assert DeadLetter.objects.get(pk=globex.dead_letter.pk).replayed_at is None
    assert Delivery.objects.get(pk=globex.delivery.pk).status == "dead"
    # garbage ids are 404s too, not 500s
    for path in (
        "/portal/deliveries/abc/",
        "/portal/deliveries/99999999999999999999999999/",
        "/portal/deliveries/-1/",
    ):
        assert browser.get(path).status_code == 404, path
    assert browser.get("/portal/endpoints/%00/").status_code == 400  # refused before routing


def test_a_read_only_session_reads_and_cannot_write(
    tenants: tuple[Tenant, Tenant], open_portal: Any
) -> None:
    acme, _ = tenants
    browser = open_portal("acme", rights="read")
    for method, path in _urls(acme):
        answer = _send(browser, method, path)
        expected = 200 if method == "GET" else 403
        assert answer.status_code == expected, (method, path)
    assert browser.post("/portal/endpoints/", {"url": "http://127.0.0.1:9/new"}).status_code == 403
    assert Endpoint.objects.count() == 2
    page = browser.get(f"/portal/endpoints/{acme.endpoint.pk}/").content.decode()
    assert "Send a test event" not in page
    assert "read only" in page


def test_partner_text_is_escaped_everywhere(
    tenants: tuple[Tenant, Tenant], open_portal: Any
) -> None:
    acme, _ = tenants
    script = "<script>alert(1)</script>"
    Endpoint.objects.filter(pk=acme.endpoint.pk).update(description=script)
    Delivery.objects.filter(pk=acme.delivery.pk).update(request_body=script)
    acme.attempt.response_body = script
    acme.attempt.request_headers = {"x-evil": script}
    acme.attempt.save()
    DeadLetter.objects.filter(pk=acme.dead_letter.pk).update(reason=script)
    browser = open_portal("acme")
    for path in (
        "/portal/",
        "/portal/endpoints/",
        f"/portal/endpoints/{acme.endpoint.pk}/",
        f"/portal/deliveries/{acme.delivery.pk}/",
        "/portal/dead-letters/",
        "/portal/deliveries/",
    ):
        page = browser.get(path).content.decode()
        assert script not in page, path
    assert (
        "&lt;script&gt;" in browser.get(f"/portal/deliveries/{acme.delivery.pk}/").content.decode()
    )


def test_an_event_page_lists_its_deliveries_here_and_never_its_data(
    tenants: tuple[Tenant, Tenant], open_portal: Any
) -> None:
    acme, _ = tenants
    acme.event.data = {"internal_margin": 310}
    acme.event.save()
    page = open_portal("acme").get(f"/portal/events/{acme.event.pk}/").content.decode()
    assert f"/portal/deliveries/{acme.delivery.pk}/" in page
    assert "internal_margin" not in page
    assert open_portal("acme").get("/portal/events/evt_nothing/").status_code == 404


def test_an_attempt_shows_what_was_sent_and_answered(
    tenants: tuple[Tenant, Tenant], open_portal: Any
) -> None:
    acme, _ = tenants
    page = open_portal("acme").get(f"/portal/deliveries/{acme.delivery.pk}/").content.decode()
    assert "Attempt 1" in page
    assert "12.5 ms" in page
    assert "500" in page
    assert "upstream broke" in page
    assert "{&quot;type&quot;:&quot;order.paid&quot;,&quot;data&quot;:{&quot;n&quot;:1}}" in page
    assert acme.event.pk in page  # the webhook-id header


def test_endpoints_are_created_and_checked_as_the_api_checks_them(
    tenants: tuple[Tenant, Tenant], open_portal: Any, settings: Any
) -> None:
    browser = open_portal("acme")
    made = browser.post(
        "/portal/endpoints/",
        {"url": "http://127.0.0.1:9/new", "description": "new one", "event_types": ["order.paid"]},
    )
    assert made.status_code == 302
    endpoint = Endpoint.objects.get(description="new one")
    assert endpoint.application.uid == "acme"  # whatever the form says, it is this application's
    assert made["Location"] == f"/portal/endpoints/{endpoint.pk}/"
    # the SSRF guard, as in the API
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    refused = browser.post("/portal/endpoints/", {"url": "http://169.254.169.254/latest"})
    assert refused.status_code == 400
    assert "169.254.169.254" in refused.content.decode()
    assert not Endpoint.objects.filter(url__contains="169.254").exists()
    # an unknown event type is refused with the field
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    unknown = browser.post(
        "/portal/endpoints/", {"url": "http://127.0.0.1:9/y", "event_types": ["nope"]}
    )
    assert unknown.status_code == 400
    # an application field in the form is ignored: the endpoint is this application's
    browser.post(
        "/portal/endpoints/",
        {"url": "http://127.0.0.1:9/z", "description": "sneaky", "application": "globex"},
    )
    assert Endpoint.objects.get(description="sneaky").application.uid == "acme"


def test_the_endpoint_page_edits_rotates_and_reveals(
    tenants: tuple[Tenant, Tenant], open_portal: Any
) -> None:
    acme, _ = tenants
    browser = open_portal("acme")
    base = f"/portal/endpoints/{acme.endpoint.pk}/"
    saved = browser.post(
        base,
        {"url": acme.endpoint.url, "description": "renamed", "rate_limit_per_second": "5"},
    )
    assert saved.status_code == 302
    acme.endpoint.refresh_from_db()
    assert acme.endpoint.description == "renamed"
    assert acme.endpoint.rate_limit_per_second == 5
    assert acme.endpoint.event_types == []
    # headers: set, masked on the page, removed
    browser.post(base + "headers/", {"name": "Authorization", "value": "Bearer s3cr3t"})
    acme.endpoint.refresh_from_db()
    assert acme.endpoint.headers == {
        "authorization": "Bearer s3cr3t"
    }  # names as the API keeps them
    page = browser.get(base).content.decode()
    assert "s3cr3t" not in page
    assert "********" in page
    # the same name in another case replaces it
    browser.post(base + "headers/", {"name": "AUTHORIZATION", "value": "Bearer n3w"})
    acme.endpoint.refresh_from_db()
    assert acme.endpoint.headers == {"authorization": "Bearer n3w"}
    refused = browser.post(base + "headers/", {"name": "webhook-id", "value": "x"}, follow=True)
    assert "is set by the service" in refused.content.decode()
    browser.post(base + "headers/", {"remove": "authorization"})
    acme.endpoint.refresh_from_db()
    assert acme.endpoint.headers == {}
    # the secret, revealed on request; rotated with a grace
    shown = browser.post(base + "secret/").content.decode()
    assert signing.SECRET_PREFIX in shown
    revealed = AuditRecord.objects.get(action="endpoint.secret_revealed")
    assert revealed.actor.startswith("portal:pa_")
    assert revealed.object_id == acme.endpoint.pk
    rotated = browser.post(base + "rotate/", {"grace_hours": "24"}).content.decode()
    assert "keeps signing until" in rotated
    assert browser.post(base + "rotate/", {"grace_hours": "9999"}).status_code == 302


def test_disable_enable_replay_resend_and_delete(
    tenants: tuple[Tenant, Tenant], open_portal: Any
) -> None:
    acme, _ = tenants
    browser = open_portal("acme")
    base = f"/portal/endpoints/{acme.endpoint.pk}/"
    browser.post(base + "disable/")
    acme.endpoint.refresh_from_db()
    assert not acme.endpoint.enabled
    browser.post(base + "enable/", {"replay_missed": "on"})
    acme.endpoint.refresh_from_db()
    assert acme.endpoint.enabled
    assert DeadLetter.objects.get(pk=acme.dead_letter.pk).replayed_at is not None
    assert Delivery.objects.get(pk=acme.delivery.pk).status == "pending"
    # pending again (replayed): not resent now, and the page says why
    resent = browser.post(f"/portal/deliveries/{acme.delivery.pk}/resend/", follow=True)
    assert resent.status_code == 200
    assert "Not resent" in resent.content.decode()
    Delivery.objects.filter(pk=acme.delivery.pk).update(status="failed", next_attempt_at=None)
    resent = browser.post(f"/portal/deliveries/{acme.delivery.pk}/resend/", follow=True)
    assert "Sent again" in resent.content.decode()
    browser.post(base + "delete/")
    assert not Endpoint.objects.filter(pk=acme.endpoint.pk).exists()


def test_dead_letters_replay_one_by_one(tenants: tuple[Tenant, Tenant], open_portal: Any) -> None:
    acme, _ = tenants
    browser = open_portal("acme")
    listed = browser.get("/portal/dead-letters/").content.decode()
    assert "HTTP 500" in listed
    assert "HTTP 500" in browser.get("/portal/dead-letters/?event_type=order.paid").content.decode()
    assert "None waiting" in browser.get("/portal/dead-letters/?event_type=x.y").content.decode()
    later = browser.get("/portal/dead-letters/?since=2999-01-01T00:00").content.decode()
    assert "None waiting" in later
    assert "HTTP 500" in browser.get("/portal/dead-letters/?since=nonsense").content.decode()
    browser.post("/portal/dead-letters/replay/", {"dead_letter": acme.dead_letter.pk})
    assert DeadLetter.objects.get(pk=acme.dead_letter.pk).replayed_at is not None
    assert "None waiting" in browser.get("/portal/dead-letters/").content.decode()


def test_deliveries_are_searched_by_type_status_and_time(
    tenants: tuple[Tenant, Tenant], open_portal: Any
) -> None:
    acme, _ = tenants
    browser = open_portal("acme")
    found = browser.get("/portal/deliveries/?status=dead&event_type=order.paid").content.decode()
    assert acme.event.pk in found
    none = browser.get("/portal/deliveries/?status=succeeded").content.decode()
    assert acme.event.pk not in none
    later = browser.get("/portal/deliveries/?since=2999-01-01T00:00").content.decode()
    assert acme.event.pk not in later
    assert browser.get("/portal/deliveries/?since=yesterday").status_code == 200


def test_the_catalog_shows_each_type_and_a_guide_that_verifies(
    tenants: tuple[Tenant, Tenant], open_portal: Any
) -> None:
    page = open_portal("acme", rights="read").get("/portal/catalog/").content.decode()
    assert "order.paid" in page
    assert "An order was paid." in page
    assert "&quot;required&quot;" in page  # the payload schema
    # the guide's Python, run as written against a request signed as ours are
    secret = signing.generate_secret()
    body = b'{"type":"order.paid","data":{}}'
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(int(time.time())),
    }
    headers["webhook-signature"] = signing.signature_header(
        [signing.signing_key(secret)],
        headers["webhook-id"],
        int(headers["webhook-timestamp"]),
        body,
    )
    code = guide.verification().python.replace(f'"{signing.SECRET_PREFIX}..."', repr(secret))
    scope: dict[str, Any] = {"request_body": body, "request_headers": headers}
    exec(code, scope)  # noqa: S102 - our own snippet
    assert scope["payload"] == {"type": "order.paid", "data": {}}


def test_an_ed25519_endpoint_shows_its_public_key_never_its_private_one(
    tenants: tuple[Tenant, Tenant], open_portal: Any
) -> None:
    from webhooks.services import endpoint_create

    endpoint, private = endpoint_create(
        url="http://127.0.0.1:9/ed", application=tenants[0].application, signature_scheme="ed25519"
    )
    browser = open_portal("acme")
    for answer in (
        browser.post(f"/portal/endpoints/{endpoint.pk}/secret/"),
        browser.post(f"/portal/endpoints/{endpoint.pk}/rotate/", {"grace_hours": "0"}),
    ):
        page = answer.content.decode()
        assert signing.PUBLIC_KEY_PREFIX in page
        assert "Public key (verify with it)" in page
        assert private not in page
        assert "whsk_" not in page
