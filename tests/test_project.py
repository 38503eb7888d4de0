"""Project-level behaviour: health, OpenAPI, the key command, and ingest with the broker down."""

from __future__ import annotations

import io
import json
import urllib.request
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from deliveries.models import Delivery
from tests.conftest import WebServer, worker_env
from webhooks.models import ApiKey
from webhooks_project.localstack import free_port


def test_healthz_reports_database_and_broker(db: None) -> None:
    response = APIClient().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_healthz_is_503_when_the_broker_is_away(db: None, settings: Any) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
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
def test_ingest_answers_202_and_keeps_rows_pending_when_the_broker_is_down(api: APIClient) -> None:
    # given a real web server whose broker address has nothing listening
    api.post("/api/v1/event-types/", {"name": "a.b", "schema": {}}, format="json")
    api.post("/api/v1/endpoints/", {"url": "http://127.0.0.1:9/x"}, format="json")
    out = io.StringIO()
    call_command("create_api_key", "src", stdout=out, stderr=io.StringIO())
    key = out.getvalue().strip().splitlines()[-1]
    server = WebServer(worker_env(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")).start()
    try:
        # when an event is posted over HTTP
        request = urllib.request.Request(
            server.url + "/api/v1/events/",
            data=json.dumps({"type": "a.b", "data": {"n": 1}}).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, json.loads(response.read())
    finally:
        server.stop()
    # then it is accepted and its delivery waits in PostgreSQL for the sweeper
    assert status == 202
    assert body["deliveries"] == 1
    assert list(Delivery.objects.values_list("status", flat=True)) == ["pending"]
