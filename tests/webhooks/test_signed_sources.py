"""Signed ingestion attacked: a source that must sign refuses unsigned, forged, stale and replayed
requests with 401 and stores nothing; the reference library's signatures are accepted."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient
from standardwebhooks import Webhook

from deliveries.models import Event
from schemas_app.services import event_type_create
from webhooks.services import CreatedSource, source_create
from webhooks.signing import generate_secret

pytestmark = pytest.mark.django_db


@pytest.fixture
def source() -> CreatedSource:
    event_type_create(
        name="order.created",
        schema={"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
    )
    return source_create(name="billing")


def _post(
    created: CreatedSource,
    data: Any,
    *,
    secret: str | None = None,
    msg_id: str = "msg_1",
    at: datetime | None = None,
    signed: bool = True,
    path: str = "/api/v1/events/",
) -> Any:
    body = json.dumps(data)
    headers: dict[str, str] = {}
    if signed:
        at = at or datetime.now(UTC)
        signature = Webhook(secret or created.secret).sign(msg_id, at, body)
        headers = {
            "HTTP_WEBHOOK_ID": msg_id,
            "HTTP_WEBHOOK_TIMESTAMP": str(int(at.timestamp())),
            "HTTP_WEBHOOK_SIGNATURE": signature,
        }
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {created.key}")
    return client.post(path, body, content_type="application/json", **headers)


ORDER = {"type": "order.created", "data": {"id": "o-1"}}


def test_a_request_signed_by_the_reference_library_is_accepted(source: CreatedSource) -> None:
    response = _post(source, ORDER)
    assert response.status_code == 202, response.json()
    batch = _post(source, [ORDER, ORDER], msg_id="msg_2", path="/api/v1/events/batch/")
    assert batch.status_code == 202
    assert Event.objects.count() == 3


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ({"signed": False}, "missing webhook-id, webhook-timestamp or webhook-signature header"),
        ({"secret": generate_secret()}, "no signature matches"),
        # Offsets, not timestamps: a time computed at collection would drift into the tolerance
        # on a slow run before the test uses it.
        ({"skew": timedelta(minutes=-6)}, "outside the allowed tolerance"),
        ({"skew": timedelta(minutes=6)}, "outside the allowed tolerance"),
    ],
    ids=["unsigned", "forged", "stale", "from-the-future"],
)
def test_unsigned_forged_and_stale_requests_are_401_and_store_nothing(
    source: CreatedSource, attack: dict[str, Any], message: str
) -> None:
    attack = dict(attack)
    if "skew" in attack:
        attack["at"] = datetime.now(UTC) + attack.pop("skew")
    response = _post(source, ORDER, **attack)
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"
    assert message in response.json()["detail"]
    assert not Event.objects.exists()


def test_a_body_changed_after_signing_is_refused(source: CreatedSource) -> None:
    at = datetime.now(UTC)
    signature = Webhook(source.secret).sign("msg_1", at, json.dumps(ORDER))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {source.key}")
    response = client.post(
        "/api/v1/events/",
        json.dumps({**ORDER, "data": {"id": "o-2"}}),
        content_type="application/json",
        HTTP_WEBHOOK_ID="msg_1",
        HTTP_WEBHOOK_TIMESTAMP=str(int(at.timestamp())),
        HTTP_WEBHOOK_SIGNATURE=signature,
    )
    assert response.status_code == 401
    assert not Event.objects.exists()


def test_a_replayed_webhook_id_is_refused_inside_the_window(source: CreatedSource) -> None:
    assert _post(source, ORDER).status_code == 202
    replay = _post(source, ORDER)  # same id, freshly signed: a replay all the same
    assert replay.status_code == 401
    assert "already accepted" in replay.json()["detail"]
    assert Event.objects.count() == 1
    assert _post(source, ORDER, msg_id="msg_other").status_code == 202


def test_a_message_refused_for_its_content_may_be_sent_again_with_its_id(
    source: CreatedSource,
) -> None:
    bad = _post(source, {"type": "order.created", "data": {}})
    assert bad.status_code == 422
    assert _post(source, ORDER).status_code == 202  # the same webhook-id, now accepted


def test_reads_with_a_signing_sources_key_need_no_signature(source: CreatedSource) -> None:
    source.api_key.scopes = ["events:write", "read"]
    source.api_key.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {source.key}")
    assert client.get("/api/v1/events/").status_code == 200


def test_an_unsigned_source_needs_only_its_key(db: None) -> None:
    event_type_create(name="order.created", schema={})
    created = source_create(name="legacy", require_signature=False)
    assert _post(created, ORDER, signed=False).status_code == 202


def test_with_the_replay_window_unavailable_a_signed_request_is_503(
    source: CreatedSource, settings: Any, dead_port: int
) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{dead_port}/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    response = _post(source, ORDER)
    assert response.status_code == 503
    assert not Event.objects.exists()


def test_the_command_prints_the_secret_and_the_key(db: None) -> None:
    out = io.StringIO()
    call_command("create_source", "crm", stdout=out, stderr=io.StringIO())
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("signing secret: whsec_")
    assert lines[1].startswith("api key: ")
