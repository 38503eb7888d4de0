"""Schemathesis against our own OpenAPI document (/api/schema/): generated requests to every
operation, made with a key that has every scope, never get a 5xx, answer only statuses the
document lists, and every response matches its documented schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from schemas_app.services import event_type_create
from webhooks.models import ApiKey
from webhooks.services import api_key_create, application_create, endpoint_create


def _schema() -> Any:
    from webhooks_project.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/schema/", application)


schema = _schema()


@pytest.fixture
def key(db: None, settings: Any) -> Iterator[str]:
    settings.WEBHOOKS_THROTTLE_RATE = "off"
    event_type_create(name="order.created", schema={"type": "object"})
    application_create(uid="acme", name="Acme")
    endpoint_create(url="http://127.0.0.1:9/hook")
    # the requests go straight to the WSGI app, inside the test's transaction: keep Django
    # from closing that connection at the end of each request (its test client does the same)
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield api_key_create(name="schemathesis", scopes=ApiKey.Scope.values)[1]
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,  # CI sees exactly what a local run sees; explore with more examples locally
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_no_operation_fails_or_answers_off_schema(case: Any, key: str) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {key}"},
        checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
    )
