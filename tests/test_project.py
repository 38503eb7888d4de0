"""Project-level behaviour: health, OpenAPI, the key command, and ingest with the broker down."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from deliveries.models import Delivery
from tests.conftest import BASE_DIR, WebServer, startup_refusal, wait_until, worker_env
from webhooks.models import ApiKey


def test_healthz_reports_database_and_broker(db: None) -> None:
    response = APIClient().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_healthz_is_503_when_the_broker_is_away(db: None, settings: Any, dead_port: int) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{dead_port}/0"
    response = APIClient().get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"].startswith("error")
    assert response.json()["database"] == "ok"


def test_openapi_schema_lists_the_api(db: None) -> None:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for path in [
        "/api/v1/events/",
        "/api/v1/events/batch/",
        "/api/v1/event-types/",
        "/api/v1/endpoints/{id}/secret/",
        "/api/v1/deliveries/{id}/attempts/",
        "/api/v1/applications/",
    ]:
        assert path in paths
    assert APIClient().get("/api/docs/").status_code == 200


def test_create_api_key_prints_the_key_alone_on_the_last_line(db: None) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_api_key", "billing", "--scopes", "events:write,read", stdout=out, stderr=err
    )
    key = out.getvalue().strip().splitlines()[-1]
    stored = ApiKey.objects.get_from_key(key)
    assert stored.name == "billing"
    assert stored.scopes == ["events:write", "read"]
    assert key not in stored.hashed_key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/events/").status_code == 200


def test_create_api_key_without_scopes_has_every_scope(db: None) -> None:
    out = io.StringIO()
    call_command("create_api_key", "ops", stdout=out, stderr=io.StringIO())
    key = out.getvalue().strip().splitlines()[-1]
    assert set(ApiKey.objects.get_from_key(key).scopes) == set(ApiKey.Scope.values)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_ingest_answers_202_and_keeps_rows_pending_when_the_broker_is_down(
    api: APIClient, dead_port: int
) -> None:
    # given a real web server whose broker address has nothing listening
    api.post("/api/v1/event-types/", {"name": "a.b", "schema": {}}, format="json")
    api.post("/api/v1/endpoints/", {"url": "http://127.0.0.1:9/x"}, format="json")
    out = io.StringIO()
    call_command("create_api_key", "src", stdout=out, stderr=io.StringIO())
    key = out.getvalue().strip().splitlines()[-1]
    server = WebServer(worker_env(REDIS_URL=f"redis://127.0.0.1:{dead_port}/0")).start()
    try:
        # when an event is posted over HTTP
        status, body = server.post_json("/api/v1/events/", {"type": "a.b", "data": {"n": 1}}, key)
    finally:
        server.stop()
    # then it is accepted and its delivery waits in PostgreSQL for the sweeper
    assert status == 202
    assert body["deliveries"] == 1
    assert list(Delivery.objects.values_list("status", flat=True)) == ["pending"]


def test_flower_gets_basic_auth_from_the_environment_or_a_password_generated_once(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devstack import cli

    monkeypatch.setattr(cli, "RUN_DIR", tmp_path)
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    generated = cli._flower_auth()
    user, password = generated.split(":", 1)
    assert user == "admin"
    assert len(password) >= 16
    assert cli._flower_auth() == generated  # kept under .run/ between runs
    assert (tmp_path / "flower-auth").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:s3cret")
    assert cli._flower_auth() == "ops:s3cret"
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "no-password")
    with pytest.raises(SystemExit, match="user:password"):
        cli._flower_auth()


def test_flower_refuses_requests_without_its_basic_auth() -> None:
    import base64
    import sys
    import urllib.error

    from devstack.process import Child, ExitedWhileStarting, on_free_port

    def status(url: str) -> int | None:
        try:
            return int(urllib.request.urlopen(url, timeout=2).status)  # noqa: S310 - local
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def start(port: int) -> tuple[Child, str]:
        """Flower on `port`, answering; a fresh port if it exits (the port was taken)."""
        args = [sys.executable, "-m", "celery", "-A", "webhooks_project", "flower"]
        args += [f"--port={port}", "--address=127.0.0.1"]
        # the login from the environment, as `make run` and compose give it (never in `ps`)
        flower = Child("flower", args, env={**worker_env(), "FLOWER_BASIC_AUTH": "ops:s3cret"})
        url = f"http://127.0.0.1:{port}/workers"
        answered: list[int] = []

        def answers() -> bool:
            code = status(url)
            if code is not None:
                answered.append(code)
            return code is not None

        flower.start(ready=answers)
        if not flower.alive():  # another server answered before ours gave up on the port
            raise ExitedWhileStarting("flower exited")
        flowers.append(flower)
        assert answered[0] == 401
        return flower, url

    flowers: list[Child] = []
    try:
        _, url = on_free_port(start)
        token = base64.b64encode(b"ops:s3cret").decode()
        request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
        assert urllib.request.urlopen(request, timeout=10).status == 200  # noqa: S310
    finally:
        for flower in flowers:
            flower.stop()


@pytest.mark.parametrize(("value", "enabled"), [(None, "True"), ("false", "False")])
def test_the_attempt_log_can_be_turned_off(value: str | None, enabled: str) -> None:
    import os

    from tests.conftest import settings_probe

    env = {k: v for k, v in os.environ.items() if k != "WEBHOOKS_ATTEMPT_LOG"}
    if value is not None:
        env["WEBHOOKS_ATTEMPT_LOG"] = value
    code = (
        "import logging; logging.getLogger().setLevel(logging.INFO); "
        "print(logging.getLogger('deliveries.attempts').isEnabledFor(logging.INFO))"
    )
    assert settings_probe(code, env) == enabled


def test_keep_starts_a_command_again_when_it_dies_and_stops_with_its_group(
    tmp_path: Path,
) -> None:
    # given a command that dies at once the first time and keeps running the second time
    runs = tmp_path / "runs"
    script = (
        "import os, sys, time; from pathlib import Path; p = Path(sys.argv[1]); "
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x'); "
        "sys.exit(3) if len(p.read_text()) < 2 else time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack", "keep", "--"]
        + [sys.executable, "-c", script, str(runs)],
        cwd=BASE_DIR,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        # when it dies, then keep starts it again
        wait_until(lambda: runs.exists() and runs.read_text() == "xx", timeout=30)
        # when the group is sent SIGTERM (as honcho stops the stack), then both stop for good
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert runs.read_text() == "xx"
    assert "exited with status 3" in proc.stderr.read()


def test_a_lease_shorter_than_a_request_is_refused_at_start_up() -> None:
    # given a lease that a whole request at the HTTP timeout would outlive
    env = dict(os.environ, WEBHOOKS_LEASE_SECONDS="12", WEBHOOKS_HTTP_TIMEOUT="15")
    # when any process reads the settings (a worker, the web server, a command), it refuses
    # to start, saying what to change
    said = startup_refusal(env)
    assert "WEBHOOKS_LEASE_SECONDS (12) must be at least WEBHOOKS_HTTP_TIMEOUT + 5 (20)" in said


def test_an_endpoint_timeout_longer_than_the_lease_covers_is_refused(
    api: APIClient, settings: Any
) -> None:
    settings.WEBHOOKS_LEASE_SECONDS = 30
    url = "http://127.0.0.1:9/hook"
    refused = api.post("/api/v1/endpoints/", {"url": url, "timeout_seconds": 26}, format="json")
    assert refused.status_code == 400
    (error,) = refused.json()["errors"]
    assert error["pointer"] == "/timeout_seconds"
    assert "from 1 to 25" in error["detail"]
    taken = api.post("/api/v1/endpoints/", {"url": url, "timeout_seconds": 25}, format="json")
    assert taken.status_code == 201


@pytest.mark.parametrize(
    "path", ["/api/v1/endpoints//", "/api/v1/no-such-thing/", "/api/v2/events/", "/api/"]
)
def test_a_route_that_does_not_exist_under_api_is_a_json_404(db: None, path: str) -> None:
    # an empty id (the README's `$EP` unset) used to get Django's HTML page
    response = APIClient().patch(path, {"url": "x"}, format="json")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == "not_found"
    assert path in body["detail"]
    assert body["errors"][0]["pointer"] == ""


def test_outside_the_api_a_404_stays_a_page_and_the_admin_has_the_products_name(
    admin_client: Any,
) -> None:
    assert "text/html" in admin_client.get("/no-such-page/")["Content-Type"]
    page = admin_client.get("/admin/").content.decode()
    assert "Webhook delivery" in page
    assert "Django administration" not in page
    # "View site" goes somewhere that exists
    assert 'href="/api/docs/"' in page
    assert admin_client.get("/api/docs/").status_code == 200
