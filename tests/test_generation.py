"""The configuration generation (webhooks_project.generation): per-process caches of API keys,
schemas, applications and fan-out, dropped when configuration changes, in every process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import transaction

from deliveries.models import Delivery
from schemas_app.models import EventType
from schemas_app.services import event_type_create
from tests.conftest import WebServer, worker_env
from webhooks import selectors
from webhooks.models import Endpoint
from webhooks.services import api_key_create, api_key_revoke, endpoint_create
from webhooks_project import generation


def _ids() -> list[str]:
    """The endpoints that get an order.created event (the fan-out, cached)."""
    subscribers = selectors.event_subscribers(event_type="order.created", application_id=None)
    return [s.endpoint_id for s in subscribers]


def _token() -> bytes | None:
    return redis.Redis.from_url(settings.REDIS_URL).get(generation.KEY)


@pytest.mark.django_db(transaction=True)
def test_a_committed_change_starts_a_new_generation_and_a_rolled_back_one_does_not() -> None:
    before = _token()
    with transaction.atomic():
        event_type_create(name="order.created", schema={"type": "object"})
        assert _token() == before  # not before the commit
    after = _token()
    assert after not in (None, before)
    with pytest.raises(RuntimeError):
        _create_then_fail()
    assert _token() == after


@transaction.atomic
def _create_then_fail() -> None:
    endpoint_create(url="https://example.com/hook")
    raise RuntimeError("roll back")


@pytest.mark.django_db(transaction=True)
def test_bookkeeping_saves_do_not_start_a_generation() -> None:
    api_key, _ = api_key_create(name="k", scopes=["read"])
    before = _token()
    api_key.save(update_fields=["last_used_at"])
    assert _token() == before
    api_key.save(update_fields=["scopes"])
    assert _token() != before


@pytest.mark.django_db(transaction=True)
def test_fan_out_is_cached_until_configuration_changes(
    django_assert_num_queries: Any,
) -> None:
    event_type_create(name="order.created", schema={"type": "object"})
    first, _ = endpoint_create(url="https://example.com/a", event_types=["order.created"])
    with django_assert_num_queries(1):
        assert _ids()
        ids = _ids()
    assert ids == [first.id]
    second, _ = endpoint_create(url="https://example.com/b", event_types=["order.created"])
    assert sorted(_ids()) == sorted([first.id, second.id])


@pytest.mark.django_db(transaction=True)
def test_an_uncommitted_change_reads_the_database_and_caches_nothing() -> None:
    event_type_create(name="order.created", schema={"type": "object"})
    endpoint, _ = endpoint_create(url="https://example.com/a", event_types=["order.created"])
    assert _ids()
    seen: list[list[str]] = []
    with pytest.raises(RuntimeError):
        _disable_then_fail(endpoint, seen)
    # inside the transaction that disabled it: the database's answer, not the cache's
    assert seen == [[]]
    # rolled back: it is enabled, and nothing of the transaction was kept in the cache
    assert _ids() == [endpoint.id]


@transaction.atomic
def _disable_then_fail(endpoint: Endpoint, seen: list[list[str]]) -> None:
    endpoint.enabled = False
    endpoint.save()
    seen.append(_ids())
    raise RuntimeError("roll back")


@transaction.atomic
def _disable_then_fail(endpoint: Endpoint, seen: list[list[str]]) -> None:
    endpoint.enabled = False
    endpoint.save()
    seen.append(_ids())
    raise RuntimeError("roll back")


@pytest.mark.django_db(transaction=True)
def test_without_redis_nothing_is_cached(
    monkeypatch: pytest.MonkeyPatch, django_assert_num_queries: Any
) -> None:
    event_type_create(name="order.created", schema={"type": "object"})
    endpoint_create(url="https://example.com/a", event_types=["order.created"])
    monkeypatch.setattr(generation, "_read", lambda: None)  # the token cannot be read
    with django_assert_num_queries(2):
        _ids()
        _ids()


@pytest.fixture
def web() -> Iterator[WebServer]:
    server = WebServer(worker_env()).start()
    yield server
    server.stop()


def _post(web: WebServer, key: str, body: Any) -> tuple[int, Any]:
    return web.post_json("/api/v1/events/", body, key)


@pytest.mark.django_db(transaction=True)
def test_another_process_sees_each_change_at_its_next_request(web: WebServer) -> None:
    # given a web server that has cached a key, a schema and the fan-out
    event_type_create(name="order.created", schema={"type": "object"})
    api_key, key = api_key_create(name="k", scopes=["events:write"])
    first, _ = endpoint_create(url="https://example.com/a", event_types=["order.created"])
    for n in range(3):
        assert _post(web, key, {"type": "order.created", "data": {"n": n}})[0] == 202
    assert Delivery.objects.filter(endpoint=first).count() == 3
    # when an endpoint is added: the next event goes to it too
    second, _ = endpoint_create(url="https://example.com/b", event_types=["order.created"])
    status, event = _post(web, key, {"type": "order.created", "data": {"n": 3}})
    assert status == 202
    targets = Delivery.objects.filter(event_id=event["id"]).values_list("endpoint_id", flat=True)
    assert set(targets) == {first.id, second.id}
    # when the event type is archived by SQL: the next event is refused
    EventType.objects.filter(name="order.created").update(archived=True)  # behind the ORM's back
    generation.restart()  # what an operator does after SQL by hand (README: DEL the key)
    status, body = _post(web, key, {"type": "order.created", "data": {}})
    assert status == 422
    assert body["errors"][0]["code"] == "unknown_event_type"
    # when the key is revoked: the next request is refused
    api_key_revoke(prefix=api_key.prefix)
    assert _post(web, key, {"type": "order.created", "data": {}})[0] == 401
