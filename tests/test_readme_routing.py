"""The README's "Routing" section, run: every curl line of its examples, in order, against a real
web server on the test database, each answer a success with a JSON body, and the filter-test
answer the one the README shows. The lines are read from the README, so an example that stops
working fails here.

Each line runs in bash with curl's stand-in (tests/bin/curl: CI machines may have no curl).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.utils import timezone

from deliveries.models import DeadLetter, Delivery, Event
from deliveries.services.notices import operational_type
from devstack.services import LocalRedis
from schemas_app.services import event_type_create
from tests.conftest import WebServer, worker_env
from tests.readme import commands_of, readme_section, run_curl
from webhooks.models import ApiKey, Application
from webhooks.operational import (
    ENDPOINT_DISABLED,
    ENDPOINT_DISABLED_DESCRIPTION,
    ENDPOINT_DISABLED_SCHEMA,
    NOTICE_SCHEMAS,
    NOTICE_TYPES,
)
from webhooks.services import api_key_create, endpoint_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebServer]:
    """The web server on a Redis of its own: no worker takes what the examples publish (the
    session's worker would send the resent delivery before `retry-now` could find it waiting)."""
    redis = LocalRedis(tmp_path / "redis", persist=False).start()
    web = WebServer(worker_env(REDIS_URL=redis.url())).start()
    yield web
    web.stop()
    redis.stop()


def test_the_routing_section_runs_as_written(server: WebServer, tmp_path: Path) -> None:
    # what the examples name: types, an endpoint, a finished delivery, a waiting dead letter
    for name in ("order.paid", "order.created", "user.deleted"):
        event_type_create(name=name, schema={"type": "object"})
    # the operational types, as their migrations register them (a transactional test before
    # this one may have flushed them)
    for name in NOTICE_TYPES:
        operational_type(name, *NOTICE_SCHEMAS[name])
    operational_type(ENDPOINT_DISABLED, ENDPOINT_DISABLED_SCHEMA, ENDPOINT_DISABLED_DESCRIPTION)
    Application.objects.create(uid="acme", name="Acme")
    endpoint, _ = endpoint_create(url="http://127.0.0.1:9/ep")
    _, key = api_key_create(name="readme", scopes=ApiKey.Scope.values)
    now = timezone.now()
    done, dead = (Event.objects.create(event_type_id="order.paid", data={}) for _ in range(2))
    delivery = Delivery.objects.create(
        event=done, endpoint=endpoint, status="succeeded", completed_at=now, attempt_count=1
    )
    died = Delivery.objects.create(
        event=dead, endpoint=endpoint, status="dead", completed_at=now, next_attempt_at=None
    )
    dead_letter = DeadLetter.objects.create(
        delivery=died, endpoint=endpoint, event_type="order.paid", reason="HTTP 500"
    )
    variables = {
        "API": server.url + "/api/v1",
        "AUTH": f"Authorization: Bearer {key}",
        "EP": endpoint.pk,
        "DELIVERY": str(delivery.pk),
        "DEAD_LETTER": str(dead_letter.pk),
    }
    commands = commands_of(readme_section("## Routing"))
    assert len(commands) >= 15, commands
    for command in commands:
        status, body = run_curl(command, variables, tmp_path / "curl.log")
        assert 200 <= status < 300, (command, status, body)
        assert isinstance(body, dict), (command, body)
        if "/filter-test/" in command:
            # the answer the README shows
            assert body["matches"] is False
            assert body["subscribed"] is True
            assert body["clause"] == "/filters/order.paid/$or"
    # and they did what they say
    endpoint.refresh_from_db()
    assert endpoint.ordering == "per_key"
    assert endpoint.ordering_on_dead == "block"
    assert endpoint.channels == ["region:eu"]
    dead_letter.refresh_from_db()
    assert dead_letter.skipped is True
    assert Event.objects.filter(ordering_key="order-1001").exists()
