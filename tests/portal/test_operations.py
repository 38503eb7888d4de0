"""The portal from the operator's side: the application admin's link actions, the prune job, and
the cookies when the portal may be embedded in another site's frame."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from audit.models import AuditRecord
from portal.models import PortalAccess, PortalSession
from portal.tasks import portal_prune
from tests.conftest import settings_probe, startup_refusal, worker_env
from tests.portal.conftest import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator() -> Client:
    get_user_model().objects.create_superuser("op", "op@example.com", "pw-correct-horse")
    client = Client()
    client.force_login(get_user_model().objects.get(username="op"))
    return client


def test_the_admin_copies_a_link_that_opens_the_portal(
    tenants: tuple[Tenant, Tenant], operator: Client
) -> None:
    acme = tenants[0].application
    answer = operator.post(
        "/admin/webhooks/application/",
        {"action": "copy_portal_link_read_only", "_selected_action": [acme.pk]},
        follow=True,
    )
    assert answer.status_code == 200
    page = answer.content.decode()
    assert "/portal/enter/#wpt_" in page
    code = page.split("/portal/enter/#", 1)[1].split('"', 1)[0]
    access = PortalAccess.objects.get()
    assert access.rights == "read"
    assert access.created_by == "admin:op"
    assert Client().post("/portal/enter/", {"token": code}).status_code == 302


def test_the_admin_opens_the_portal_as_an_application(
    tenants: tuple[Tenant, Tenant], operator: Client
) -> None:
    globex = tenants[1].application
    answer = operator.post(
        "/admin/webhooks/application/",
        {"action": "open_portal", "_selected_action": [globex.pk]},
    )
    assert answer.status_code == 302
    assert "/portal/enter/#wpt_" in answer["Location"]
    assert PortalAccess.objects.get().application == globex


def test_the_prune_job_forgets_old_sessions_and_dead_links(
    tenants: tuple[Tenant, Tenant], open_portal: Any
) -> None:
    open_portal("acme")
    open_portal("globex")
    long_ago = timezone.now() - timedelta(days=400)
    PortalSession.objects.filter(access__application__uid="acme").update(expires_at=long_ago)
    PortalAccess.objects.filter(application__uid="acme").update(expires_at=long_ago)
    assert portal_prune() == {"sessions": 1, "accesses": 1}
    assert list(PortalAccess.objects.values_list("application__uid", flat=True)) == ["globex"]
    assert PortalSession.objects.count() == 1


def test_embedding_sends_every_cookie_to_a_third_party_frame() -> None:
    allowed = settings_probe(
        "from django.conf import settings as s; print(s.CSRF_COOKIE_SAMESITE, "
        "s.SESSION_COOKIE_SAMESITE, s.CSRF_COOKIE_SECURE)",
        worker_env(WEBHOOKS_PORTAL_FRAME_ANCESTORS="https://app.example.com"),
    )
    assert allowed == "None None True"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOKS_PORTAL_FRAME_ANCESTORS", "javascript:alert(1)"),
        ("WEBHOOKS_PORTAL_ACCENT", "red;}body{display:none"),
        ("WEBHOOKS_PORTAL_LOGO_URL", "javascript:alert(1)"),
        ("WEBHOOKS_PORTAL_ENTER_RATE", "off"),
    ],
)
def test_portal_settings_that_would_break_it_are_refused_at_start_up(name: str, value: str) -> None:
    assert name in startup_refusal(worker_env(**{name: value}))


def test_an_application_can_have_its_own_portal_branding(
    tenants: tuple[Tenant, Tenant], make_api_client: Any, open_portal: Any
) -> None:
    api = make_api_client(["endpoints:manage"])
    branded = api.patch(
        "/api/v1/applications/acme/",
        {
            "portal_name": "Acme Hooks",
            "portal_logo_url": "https://acme.example/logo.png",
            "portal_accent": "#aa2200",
        },
        format="json",
    )
    assert branded.status_code == 200, branded.content
    page = open_portal("acme").get("/portal/").content.decode()
    assert "Acme Hooks" in page
    assert "--accent: #aa2200" in page
    assert 'src="https://acme.example/logo.png"' in page
    # another application's partners see the settings' branding, and so does the link's page
    other = open_portal("globex").get("/portal/").content.decode()
    assert "Acme Hooks" not in other
    assert "--accent: #1f5fbf" in other
    assert "Acme Hooks" not in Client().get("/portal/enter/").content.decode()
    assert AuditRecord.objects.filter(
        action="application.updated", after__portal_accent="#aa2200"
    ).exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("portal_accent", "red;}body{display:none"),
        ("portal_accent", "#abc"),
        ("portal_logo_url", "javascript:alert(1)"),
        ("portal_logo_url", "data:image/png;base64,AAAA"),
        ("portal_name", "x" * 101),
    ],
)
def test_branding_that_would_break_the_page_is_refused(
    tenants: tuple[Tenant, Tenant], make_api_client: Any, field: str, value: str
) -> None:
    answer = make_api_client(["endpoints:manage"]).patch(
        "/api/v1/applications/acme/", {field: value}, format="json"
    )
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["pointer"] == f"/{field}"
