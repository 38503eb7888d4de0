"""A value of another JSON type than its field's is refused with its pointer, never converted:
DRF turns `5` into "5" for text, "600" into 600 for a number, and "true", "yes" or 1 into True
for a boolean (webhooks_project/strict.py)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas_app.services import event_type_create
from webhooks.services import endpoint_create

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("path", "body", "pointer"),
    [
        ("/api/v1/endpoints/", {"url": "https://example.com/h", "description": 5}, "/description"),
        ("/api/v1/endpoints/", {"url": "https://example.com/h", "enabled": "true"}, "/enabled"),
        ("/api/v1/endpoints/", {"url": "https://example.com/h", "enabled": 1}, "/enabled"),
        (
            "/api/v1/endpoints/",
            {"url": "https://example.com/h", "rate_limit_per_second": "5"},
            "/rate_limit_per_second",
        ),
        (
            "/api/v1/endpoints/",
            {"url": "https://example.com/h", "retry_schedule": [5, "60"]},
            "/retry_schedule/1",
        ),
        (
            "/api/v1/endpoints/",
            {"url": "https://example.com/h", "timeout_seconds": True},
            "/timeout_seconds",
        ),
        ("/api/v1/applications/acme/portal-access/", {"expires_in": "600"}, "/expires_in"),
    ],
)
def test_a_value_of_another_type_is_refused_not_converted(
    make_api_client: Any, path: str, body: dict[str, Any], pointer: str
) -> None:
    from webhooks.models import Application, Endpoint

    Application.objects.create(uid="acme", name="Acme")
    answer = make_api_client().post(path, body, format="json")
    assert answer.status_code == 400, answer.content
    errors = answer.json()["errors"]
    assert pointer in [e["pointer"] for e in errors], errors
    assert not Endpoint.objects.exists()


def test_a_secret_rotation_grace_as_text_is_refused(make_api_client: Any) -> None:
    event_type_create(name="order.created", schema={"type": "object"})
    endpoint, _ = endpoint_create(url="https://example.com/h")
    answer = make_api_client().post(
        f"/api/v1/endpoints/{endpoint.pk}/rotate-secret/", {"grace_seconds": "60"}, format="json"
    )
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["pointer"] == "/grace_seconds"


def test_numbers_and_booleans_of_the_right_type_pass(make_api_client: Any) -> None:
    answer = make_api_client().post(
        "/api/v1/endpoints/",
        {
            "url": "https://example.com/h",
            "enabled": False,
            "rate_limit_per_second": 5,
            "retry_schedule": [5, 60],
            "timeout_seconds": 10,
        },
        format="json",
    )
    assert answer.status_code == 201, answer.content
    assert answer.json()["rate_limit_per_second"] == 5
