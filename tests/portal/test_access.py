"""Portal links: made through the API (scoped, audited, stored hashed), opened once for a session
of one application, refused when used, expired or revoked, rate-limited, and sessions that end."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditRecord
from portal.models import PortalAccess, PortalSession
from tests.portal.conftest import Tenant, link

pytestmark = pytest.mark.django_db


def test_a_link_is_made_once_stored_hashed_and_audited(
    tenants: tuple[Tenant, Tenant], make_api_client: Any
) -> None:
    api = make_api_client(["endpoints:manage"])
    answer = api.post(
        "/api/v1/applications/acme/portal-access/",
        {"rights": "read", "expires_in": 600, "session_seconds": 900},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["rights"] == "read"
    assert body["application"] == "acme"
    assert body["session_seconds"] == 900
    code = body["url"].split("#", 1)[1]
    access = PortalAccess.objects.get(pk=body["id"])
    assert access.token_hash == hashlib.sha256(code.encode()).hexdigest()
    assert code not in str(PortalAccess.objects.filter(pk=body["id"]).values().get())
    assert AuditRecord.objects.filter(action="portal_access.created", object_id=access.pk).exists()
    # the list shows the links, never a token or a URL
    listed = api.get("/api/v1/applications/acme/portal-access/").json()
    assert [row["id"] for row in listed] == [access.pk]
    assert "url" not in listed[0]
    assert code not in str(listed)


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"rights": "admin"}, "/rights"),
        ({"expires_in": 10}, "/expires_in"),
        ({"expires_in": "600"}, "/expires_in"),
        ({"session_seconds": 10**9}, "/session_seconds"),
        ({"colour": "red"}, "/colour"),
    ],
)
def test_bad_requests_for_a_link_say_what_is_wrong(
    tenants: tuple[Tenant, Tenant], make_api_client: Any, body: dict[str, Any], pointer: str
) -> None:
    answer = make_api_client(["endpoints:manage"]).post(
        "/api/v1/applications/acme/portal-access/", body, format="json"
    )
    assert answer.status_code == 400, answer.content
    assert pointer in [e["pointer"] for e in answer.json()["errors"]]


def test_links_need_the_manage_scope_and_the_keys_application(
    tenants: tuple[Tenant, Tenant], make_api_client: Any
) -> None:
    assert (
        make_api_client(["read"])
        .post("/api/v1/applications/acme/portal-access/", {}, format="json")
        .status_code
        == 403
    )
    assert (
        make_api_client(["endpoints:manage"])
        .post("/api/v1/applications/nobody/portal-access/", {}, format="json")
        .status_code
        == 404
    )
    # a key limited to globex does not find acme
    from webhooks.services import api_key_create

    _, key = api_key_create(
        name="globex", scopes=["endpoints:manage"], application=tenants[1].application
    )
    limited = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert limited.post("/api/v1/applications/acme/portal-access/").status_code == 404
    assert limited.get("/api/v1/applications/acme/portal-access/").status_code == 404
    assert (
        limited.post(
            "/api/v1/applications/globex/portal-access/", {}, content_type="application/json"
        ).status_code
        == 201
    )


def test_a_link_opens_one_session_once(
    tenants: tuple[Tenant, Tenant], make_api_client: Any
) -> None:
    code = link(make_api_client(["endpoints:manage"]), "acme")
    # fetching the link's page (a mail scanner, a chat preview) uses nothing up
    browser = Client()
    page = browser.get("/portal/enter/")
    assert page.status_code == 200
    assert b'name="token"' in page.content
    opened = browser.post("/portal/enter/", {"token": code})
    assert opened.status_code == 302
    cookie = opened.cookies["webhooks_portal"]
    assert cookie["httponly"]
    assert cookie["path"] == "/portal/"
    assert cookie["samesite"] == "Lax"
    home = browser.get("/portal/")
    assert home.status_code == 200
    assert b"Acme Inc" in home.content
    assert AuditRecord.objects.filter(action="portal_access.used").count() == 1
    # the same code again, from anywhere: refused
    again = Client().post("/portal/enter/", {"token": code})
    assert again.status_code == 400
    assert b"not valid" in again.content
    assert PortalSession.objects.count() == 1


@pytest.mark.parametrize("how", ["expired", "revoked", "unknown", "empty"])
def test_a_link_that_cannot_open_says_so(
    tenants: tuple[Tenant, Tenant], make_api_client: Any, how: str
) -> None:
    code = link(make_api_client(["endpoints:manage"]), "acme")
    if how == "expired":
        PortalAccess.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    elif how == "revoked":
        PortalAccess.objects.update(revoked_at=timezone.now())
    elif how == "unknown":
        code = code[:-2] + "xx"
    else:
        code = ""
    answer = Client().post("/portal/enter/", {"token": code})
    assert answer.status_code == 400
    assert "webhooks_portal" not in answer.cookies
    assert not PortalSession.objects.exists()


def test_revoking_a_link_ends_its_session(
    tenants: tuple[Tenant, Tenant], open_portal: Any, make_api_client: Any
) -> None:
    browser = open_portal("acme")
    access = PortalAccess.objects.get()
    answer = make_api_client(["endpoints:manage"]).delete(
        f"/api/v1/applications/acme/portal-access/{access.pk}/"
    )
    assert answer.status_code == 204
    assert browser.get("/portal/")["Location"] == "/portal/signed-out/"
    assert AuditRecord.objects.filter(action="portal_access.revoked").exists()
    # another application's link is not found through this one
    assert (
        make_api_client(["endpoints:manage"])
        .delete(f"/api/v1/applications/globex/portal-access/{access.pk}/")
        .status_code
        == 404
    )


def test_sessions_expire_and_sign_out(tenants: tuple[Tenant, Tenant], open_portal: Any) -> None:
    browser = open_portal("acme")
    assert browser.get("/portal/").status_code == 200
    PortalSession.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    signed_out = browser.get("/portal/endpoints/")
    assert signed_out.status_code == 302
    assert signed_out["Location"] == "/portal/signed-out/"
    assert browser.get("/portal/signed-out/").status_code == 401
    other = open_portal("acme")
    assert other.post("/portal/sign-out/").status_code == 302
    assert other.get("/portal/")["Location"] == "/portal/signed-out/"


def test_tries_at_link_codes_are_rate_limited(
    tenants: tuple[Tenant, Tenant], settings: Any, make_api_client: Any
) -> None:
    # a window whose boundary is centuries away: the count cannot restart between the tries
    # (windows are aligned to the clock; a minute could end mid-test)
    settings.WEBHOOKS_PORTAL_ENTER_RATE = (3, 10**10)
    address, elsewhere = f"tries-{uuid.uuid4()}", f"tries-{uuid.uuid4()}"  # counts of their own
    browser = Client(REMOTE_ADDR=address)
    for _ in range(3):
        assert browser.post("/portal/enter/", {"token": "wpt_guess"}).status_code == 400
    refused = browser.post("/portal/enter/", {"token": "wpt_guess"})
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    # a real code from that address waits too; another address is not held up
    code = link(make_api_client(["endpoints:manage"]), "acme")
    assert browser.post("/portal/enter/", {"token": code}).status_code == 429
    assert Client(REMOTE_ADDR=elsewhere).post("/portal/enter/", {"token": code}).status_code == 302


def test_every_form_needs_the_csrf_token(tenants: tuple[Tenant, Tenant], open_portal: Any) -> None:
    browser = open_portal("acme", enforce_csrf_checks=True)
    endpoint = tenants[0].endpoint
    refused = browser.post(f"/portal/endpoints/{endpoint.pk}/disable/")
    assert refused.status_code == 403
    endpoint.refresh_from_db()
    assert endpoint.enabled
    page = browser.get(f"/portal/endpoints/{endpoint.pk}/")
    token = page.cookies.get("csrftoken") or browser.cookies["csrftoken"]
    done = browser.post(
        f"/portal/endpoints/{endpoint.pk}/disable/", {"csrfmiddlewaretoken": token.value}
    )
    assert done.status_code == 302
    endpoint.refresh_from_db()
    assert not endpoint.enabled


def test_framing_is_refused_unless_an_origin_is_allowed(
    tenants: tuple[Tenant, Tenant], open_portal: Any, settings: Any
) -> None:
    browser = open_portal("acme")
    page = browser.get("/portal/")
    assert page["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert page["X-Frame-Options"] == "DENY"
    settings.WEBHOOKS_PORTAL_FRAME_ANCESTORS = ["https://app.example.com"]
    page = browser.get("/portal/")
    assert page["Content-Security-Policy"] == "frame-ancestors 'self' https://app.example.com"
    assert "X-Frame-Options" not in page
