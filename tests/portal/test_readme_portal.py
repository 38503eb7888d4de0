"""The README's "Partner portal" example, run as written against a real web server: the link it
makes opens the portal, through the link's page and its form (CSRF and all), once."""

from __future__ import annotations

import http.cookiejar
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.services import LocalRedis
from tests.conftest import WebServer, worker_env
from tests.readme import commands_of, readme_section, run_curl
from webhooks.models import ApiKey, Application
from webhooks.services import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebServer]:
    redis = LocalRedis(tmp_path / "redis", persist=False).start()
    web = WebServer(worker_env(REDIS_URL=redis.url())).start()
    yield web
    web.stop()
    redis.stop()


def _open(url: str) -> tuple[int, str]:
    """A browser without JavaScript: the link's page, its code pasted into the form, posted
    with the page's CSRF cookie. The status after redirects, and where it ended."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page, code = url.split("#", 1)
    with opener.open(page, timeout=10) as answer:  # noqa: S310 - loopback
        assert answer.status == 200
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode({"token": code, "csrfmiddlewaretoken": csrf}).encode()
    request = urllib.request.Request(page, data=form, headers={"Referer": page})
    try:
        with opener.open(request, timeout=10) as answer:  # noqa: S310 - loopback
            return answer.status, answer.url
    except urllib.error.HTTPError as exc:
        return exc.code, page


def test_the_portal_section_runs_as_written(server: WebServer, tmp_path: Path) -> None:
    Application.objects.create(uid="acme", name="Acme Inc")
    _, key = api_key_create(name="readme", scopes=ApiKey.Scope.values)
    (command,) = commands_of(readme_section("## Partner portal"))
    variables = {"API": server.url + "/api/v1", "AUTH": f"Authorization: Bearer {key}"}
    status, body = run_curl(command, variables, tmp_path / "curl.log")
    assert status == 201, body
    assert body["rights"] == "manage"
    assert body["url"].startswith(server.url + "/portal/enter/#wpt_")
    # the partner opens it: the overview of its application
    assert _open(body["url"]) == (200, server.url + "/portal/")
    # and once only
    assert _open(body["url"])[0] == 400
