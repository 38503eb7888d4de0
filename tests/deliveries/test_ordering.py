"""Ordered delivery per key (issue 16): sequences in the order accepted, one delivery of a key
at a time, a retrying head holding only its key, dead heads skipped or holding the key, and
the API, admin and OpenAPI around it. The fault tests are in test_ordering_faults.py."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from deliveries.models import DeadLetter, Delivery, OrderingKey, OrderingSequence
from deliveries.services import ordering
from deliveries.services.claims import deliveries_claim
from tests.conftest import WorkerProcess, wait_until
from tests.sink import Received, Sink


@pytest.fixture
def order_type(api: APIClient) -> None:
    response = api.post(
        "/api/v1/event-types/", {"name": "order.updated", "schema": {}}, format="json"
    )
    assert response.status_code == 201, response.content


def _endpoint(api: APIClient, url: str, **fields: Any) -> dict[str, Any]:
    response = api.post("/api/v1/endpoints/", {"url": url, **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _post(api: APIClient, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = [{"type": "order.updated", **item} for item in items]
    if len(body) == 1:
        response = api.post("/api/v1/events/", body[0], format="json")
    else:
        response = api.post("/api/v1/events/batch/", body, format="json")
    assert response.status_code == 202, response.content
    answer = response.json()
    return answer if isinstance(answer, list) else [answer]


def _rows(endpoint_id: str) -> list[tuple[str | None, int | None, str, bool]]:
    """(key, sequence, status, due) of the endpoint's deliveries, in the order made."""
    return [
        (key, sequence, status, due is not None)
        for key, sequence, status, due in Delivery.objects.filter(endpoint_id=endpoint_id)
        .order_by("id")
        .values_list("ordering_key", "sequence", "status", "next_attempt_at")
    ]


@pytest.mark.django_db
def test_sequences_follow_acceptance_and_only_heads_are_due(
    api: APIClient, order_type: None, django_capture_on_commit_callbacks: Any
) -> None:
    ordered = _endpoint(api, "http://127.0.0.1:9/ordered", ordering="per_key")
    plain = _endpoint(api, "http://127.0.0.1:9/plain")
    assert (ordered["ordering"], ordered["ordering_on_dead"]) == ("per_key", "skip")
    assert plain["ordering"] == "none"
    with django_capture_on_commit_callbacks(execute=False):
        _post(
            api,
            [
                {"data": {"n": 1}, "ordering_key": "a"},
                {"data": {"n": 2}, "ordering_key": "b"},
                {"data": {"n": 3}, "ordering_key": "a"},
                {"data": {"n": 4}},
            ],
        )
        (later,) = _post(api, [{"data": {"n": 5}, "ordering_key": "a"}])
    assert later["ordering_key"] == "a"
    # the ordered endpoint: a key's deliveries numbered in the order accepted, only heads due
    assert _rows(ordered["id"]) == [
        ("a", 1, "pending", True),
        ("b", 1, "pending", True),
        ("a", 2, "pending", False),
        (None, None, "pending", True),  # no key: not ordered
        ("a", 3, "pending", False),
    ]
    # an endpoint without ordering gets everything at once, unnumbered
    assert _rows(plain["id"]) == [(None, None, "pending", True)] * 5
    assert dict(
        OrderingSequence.objects.filter(endpoint_id=ordered["id"]).values_list(
            "key", "last_sequence"
        )
    ) == {"a": 3, "b": 1}
    # the API shows each delivery's key and place
    listed = api.get("/api/v1/deliveries/", {"endpoint": ordered["id"]}).json()["results"]
    assert sorted((d["ordering_key"], d["sequence"]) for d in listed if d["sequence"]) == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("b", 1),
    ]


@pytest.mark.django_db
def test_a_claim_takes_only_a_keys_head_and_one_at_a_time(
    api: APIClient, order_type: None, django_capture_on_commit_callbacks: Any
) -> None:
    endpoint = _endpoint(api, "http://127.0.0.1:9/o", ordering="per_key")
    with django_capture_on_commit_callbacks(execute=False):
        _post(api, [{"data": {"n": n}, "ordering_key": "k"} for n in range(3)])
    ids = list(
        Delivery.objects.filter(endpoint_id=endpoint["id"])
        .order_by("sequence")
        .values_list("id", flat=True)
    )
    # only the head is due; a claim of every id takes it and takes the key's slot
    claims = deliveries_claim(delivery_ids=ids, now=timezone.now())
    assert [(c.delivery_id, c.ordering_key, c.sequence) for c in claims] == [(ids[0], "k", 1)]
    assert OrderingKey.objects.get(endpoint_id=endpoint["id"]).in_flight == ids[0]
    # even when the others are made due by hand while it is in flight, none is claimed: the
    # slot is taken
    Delivery.objects.filter(id__in=ids[1:]).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    assert deliveries_claim(delivery_ids=ids, now=timezone.now()) == []
    # and settling the key holds them again: the head is in flight, none is due
    with django_capture_on_commit_callbacks(execute=False), transaction.atomic():
        assert ordering.keys_settle({(endpoint["id"], "k")}) == []
    assert _rows(endpoint["id"])[1:] == [("k", 2, "pending", False), ("k", 3, "pending", False)]
    # once the head is done (recorded elsewhere: here by hand), settling frees the slot and
    # makes the second due, published after commit
    Delivery.objects.filter(id=ids[0]).update(status="succeeded")
    with django_capture_on_commit_callbacks(execute=False) as published, transaction.atomic():
        assert ordering.keys_settle({(endpoint["id"], "k")}) == [ids[1]]
    assert len(published) == 1
    assert OrderingKey.objects.get(endpoint_id=endpoint["id"]).in_flight is None
    assert _rows(endpoint["id"])[1:] == [("k", 2, "pending", True), ("k", 3, "pending", False)]


def _keyed(requests: list[Received]) -> dict[str, list[tuple[int, int]]]:
    """Per ordering key, (sequence, n) of each request in the order they arrived."""
    seen: dict[str, list[tuple[int, int]]] = {}
    for r in requests:
        seen.setdefault(r.headers["webhook-ordering-key"], []).append(
            (int(r.headers["webhook-sequence"]), json.loads(r.body)["data"]["n"])
        )
    return seen


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_worker_sends_each_key_in_order_one_at_a_time_and_keys_in_parallel(
    api: APIClient, order_type: None, sink: Sink, celery_worker: WorkerProcess
) -> None:
    sink.plan("ordered", 200, delay=0.02)
    _endpoint(api, sink.url("ordered"), ordering="per_key")
    _endpoint(api, sink.url("plain"))
    # 3 keys x 12 events, interleaved, in batches and one by one
    for start in range(0, 36, 6):
        _post(
            api,
            [{"data": {"n": n}, "ordering_key": f"key/{n % 3} é"} for n in range(start, start + 6)],
        )
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 72, timeout=60)
    # each key's requests came in the order accepted, numbered 1, 2, ... with its key named
    seen = _keyed(sink.requests("ordered"))
    assert set(seen) == {"key%2F0%20%C3%A9", "key%2F1%20%C3%A9", "key%2F2%20%C3%A9"}
    for k, received in seen.items():
        i = int(k[len("key%2F")])
        assert received == [(s + 1, i + 3 * s) for s in range(12)], k
    # and never two of one key at once
    assert sink.overlaps == []
    assert len(sink.requests("plain")) == 36
    assert "webhook-sequence" not in sink.requests("plain")[0].headers
    # the attempt log has the headers as sent
    delivery = Delivery.objects.filter(sequence=5).first()
    assert delivery is not None
    attempt = delivery.attempts.get()
    assert attempt.request_headers["webhook-sequence"] == "5"
    assert not OrderingKey.objects.filter(in_flight__isnull=False).exists()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_retrying_head_holds_only_its_own_key(
    api: APIClient, order_type: None, sink: Sink, celery_worker: WorkerProcess
) -> None:
    # key a's head fails (and is retried every second) until b is through; b always answers
    sink.plan("o#a", 500)
    _endpoint(api, sink.url("o"), ordering="per_key", retry_schedule=[1] * 20)
    _post(api, [{"data": {"n": n}, "ordering_key": "a"} for n in range(3)])
    _post(api, [{"data": {"n": n}, "ordering_key": "b"} for n in range(3, 8)])
    # b gets through while a's head is retrying (were b held by a, this would never happen)
    wait_until(lambda: len(_keyed(sink.requests("o")).get("b", [])) == 5, timeout=60)
    held = Delivery.objects.filter(ordering_key="a", sequence__gt=1)
    assert set(held.values_list("status", flat=True)) == {"pending"}
    tried = _keyed(sink.requests("o")).get("a", [])
    assert {s for s, _ in tried} <= {1}  # only a's head was tried
    # then a's consumer recovers: its head goes, then the rest of a, in order
    sink.plan("o#a", 200)
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 8, timeout=60)
    seen = _keyed(sink.requests("o"))
    assert {n for _, n in seen["a"]} == {0, 1, 2}
    assert [s for s, _ in seen["a"]][-3:] == [1, 2, 3]
    assert {s for s, _ in seen["a"][:-2]} == {1}  # the head, tried until it got through
    assert seen["b"] == [(s, s + 2) for s in range(1, 6)]
    assert sink.overlaps == []


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_dead_head_is_skipped_by_default_and_the_consumer_sees_the_gap(
    api: APIClient, order_type: None, sink: Sink, celery_worker: WorkerProcess
) -> None:
    sink.plan("o#a", 500, 200)  # a's head fails (one try allowed), the rest go through
    _endpoint(api, sink.url("o"), ordering="per_key", retry_schedule=[])
    _post(api, [{"data": {"n": n}, "ordering_key": "a"} for n in range(3)])
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 2, timeout=60)
    assert [s for s, _ in _keyed(sink.requests("o"))["a"]] == [1, 2, 3]
    assert Delivery.objects.get(sequence=1).status == "dead"
    assert DeadLetter.objects.count() == 1
    # the key has nothing left: its settling reads no day partition any more
    wait_until(lambda: OrderingKey.objects.get(key="a").low_id is None, timeout=30)
    # replaying the dead one later sends it (late, with its own sequence, which the consumer
    # sees is lower than the last)
    dead = DeadLetter.objects.get()
    assert api.post(f"/api/v1/dead-letters/{dead.pk}/replay/").status_code == 202
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 3, timeout=30)
    assert [s for s, _ in _keyed(sink.requests("o"))["a"]] == [1, 2, 3, 1]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_under_block_a_dead_head_holds_its_key_until_replayed_or_skipped(
    api: APIClient, order_type: None, sink: Sink, celery_worker: WorkerProcess
) -> None:
    sink.plan("o#a", 500, 200)
    endpoint = _endpoint(
        api, sink.url("o"), ordering="per_key", ordering_on_dead="block", retry_schedule=[]
    )
    _post(api, [{"data": {"n": n}, "ordering_key": "a"} for n in range(4)])
    _post(api, [{"data": {"n": 9}, "ordering_key": "b"}])
    # a's head fails for good; b goes; a's others wait, with no message and no due time
    dead = wait_until(lambda: DeadLetter.objects.first(), timeout=30)
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 1, timeout=30)
    waiting = Delivery.objects.filter(ordering_key="a", status="pending")
    assert waiting.count() == 3
    assert not waiting.filter(next_attempt_at__isnull=False).exists()
    # retry-now cannot jump the queue
    second = waiting.get(sequence=2)
    answer = api.post(f"/api/v1/deliveries/{second.pk}/retry-now/")
    assert answer.status_code == 409, answer.content
    assert "waits for its turn" in answer.json()["detail"]
    # when its dead letter is replayed, the head goes first (and succeeds), then the rest
    assert api.post(f"/api/v1/dead-letters/{dead.pk}/replay/").status_code == 202
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 5, timeout=30)
    assert [s for s, _ in _keyed(sink.requests("o"))["a"]] == [1, 1, 2, 3, 4]
    assert sink.overlaps == []
    # a second dead head, this time skipped: the key moves on, the delivery stays dead
    sink.plan("o#a", 500, 200)
    _post(api, [{"data": {"n": n}, "ordering_key": "a"} for n in range(10, 12)])
    dead = wait_until(
        lambda: DeadLetter.objects.filter(replayed_at__isnull=True).first(), timeout=30
    )
    assert Delivery.objects.get(ordering_key="a", sequence=6).next_attempt_at is None
    answer = api.post(f"/api/v1/dead-letters/{dead.pk}/skip/")
    assert answer.status_code == 200, answer.content
    assert answer.json()["skipped"] is True
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 6, timeout=30)
    assert Delivery.objects.get(ordering_key="a", sequence=5).status == "dead"
    assert [s for s, _ in _keyed(sink.requests("o"))["a"]][-2:] == [5, 6]
    # skipping twice is a conflict, audited once
    assert api.post(f"/api/v1/dead-letters/{dead.pk}/skip/").status_code == 409
    audit = api.get("/api/v1/audit-records/", {"action": "dead_letter.skipped"}).json()["results"]
    assert [a["object_id"] for a in audit] == [str(dead.pk)]
    # switching the endpoint to skip releases a key a dead letter holds
    sink.plan("o#a", 500, 200)
    _post(api, [{"data": {"n": n}, "ordering_key": "a"} for n in range(20, 22)])
    wait_until(lambda: DeadLetter.objects.filter(replayed_at__isnull=True).exists(), timeout=30)
    answer = api.patch(
        f"/api/v1/endpoints/{endpoint['id']}/", {"ordering_on_dead": "skip"}, format="json"
    )
    assert answer.status_code == 200, answer.content
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 7, timeout=30)


@pytest.mark.django_db
def test_ordering_input_is_checked_with_pointers(api: APIClient, order_type: None) -> None:
    answer = api.post(
        "/api/v1/endpoints/", {"url": "http://127.0.0.1:9/x", "ordering": "fifo"}, format="json"
    )
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["pointer"] == "/ordering"
    answer = api.post(
        "/api/v1/endpoints/",
        {"url": "http://127.0.0.1:9/x", "ordering_on_dead": "wait"},
        format="json",
    )
    assert answer.json()["errors"][0]["pointer"] == "/ordering_on_dead"
    for bad in ("a\nb", "x" * 201, "", 5, ["a"]):
        answer = api.post(
            "/api/v1/events/batch/",
            [
                {"type": "order.updated", "data": {}},
                {"type": "order.updated", "data": {}, "ordering_key": bad},
            ],
            format="json",
        )
        assert answer.status_code == 422, (bad, answer.content)
        assert answer.json()["errors"][0]["pointer"] == "/1/ordering_key", bad
    # a key is kept exactly as sent (no trimming), and it is part of the idempotent request
    (event,) = _post(api, [{"data": {}, "ordering_key": " a ", "idempotency_key": "i1"}])
    assert event["ordering_key"] == " a "
    again = api.post(
        "/api/v1/events/",
        {"type": "order.updated", "data": {}, "ordering_key": "a", "idempotency_key": "i1"},
        format="json",
    )
    assert again.status_code == 409, again.content


@pytest.mark.django_db
def test_the_openapi_and_the_admin_show_ordering(api: APIClient, admin_client: Any) -> None:
    schema = api.get("/api/schema/", {"format": "json"}).json()
    components = schema["components"]["schemas"]
    assert "ordering_key" in components["EventCreateRequest"]["properties"]
    assert {"ordering", "ordering_on_dead"} <= set(components["Endpoint"]["properties"])
    assert {"ordering_key", "sequence"} <= set(components["Delivery"]["properties"])
    assert "/api/v1/dead-letters/{id}/skip/" in schema["paths"]
    page = admin_client.get("/admin/webhooks/endpoint/add/").content.decode()
    assert 'name="ordering"' in page
    assert 'name="ordering_on_dead"' in page


@pytest.mark.django_db
def test_the_admin_shows_a_held_delivery_and_skips_dead_letters(
    api: APIClient, order_type: None, admin_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    endpoint = _endpoint(api, "http://127.0.0.1:9/o", ordering="per_key", ordering_on_dead="block")
    with django_capture_on_commit_callbacks(execute=False):
        _post(api, [{"data": {"n": n}, "ordering_key": "k<b>"} for n in range(2)])
    first, second = Delivery.objects.filter(endpoint_id=endpoint["id"]).order_by("sequence")
    page = admin_client.get(f"/admin/deliveries/delivery/{second.pk}/change/").content.decode()
    assert "Waiting for its turn" in page
    assert "k&lt;b&gt;" in page  # escaped
    # the head ends dead with a dead letter: under block, the second stays held
    Delivery.objects.filter(pk=first.pk).update(status="dead", next_attempt_at=None)
    dead = DeadLetter.objects.create(
        delivery=first, endpoint_id=endpoint["id"], event_type="order.updated", reason="x"
    )
    with django_capture_on_commit_callbacks(execute=True):
        answer = admin_client.post(
            "/admin/deliveries/deadletter/",
            {"action": "skip_selected", "_selected_action": [dead.pk]},
        )
    assert answer.status_code == 302
    dead.refresh_from_db()
    assert (dead.skipped, dead.replayed_by) == (True, "admin:admin")
    second.refresh_from_db()
    assert second.next_attempt_at is not None  # its turn came


@pytest.mark.django_db
def test_a_slot_left_by_a_hand_edit_is_freed_by_the_sweeper_and_the_next_goes(
    api: APIClient, order_type: None, django_capture_on_commit_callbacks: Any
) -> None:
    endpoint = _endpoint(api, "http://127.0.0.1:9/o", ordering="per_key")
    with django_capture_on_commit_callbacks(execute=False):
        _post(api, [{"data": {"n": n}, "ordering_key": "k"} for n in range(2)])
    first, second = Delivery.objects.filter(endpoint_id=endpoint["id"]).order_by("sequence")
    deliveries_claim(delivery_ids=[first.pk], now=timezone.now())
    # the head ended by hand (no recording settled its key), its slot claimed long ago
    Delivery.objects.filter(pk=first.pk).update(status="succeeded")
    OrderingKey.objects.update(claimed_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False) as published:
        assert (
            ordering.stale_slots_settle(claimed_before=timezone.now() - timedelta(minutes=5)) == 1
        )
    assert len(published) == 1  # the next one, published
    assert OrderingKey.objects.get().in_flight is None
    second.refresh_from_db()
    assert second.next_attempt_at is not None


@pytest.mark.django_db
def test_the_prune_job_forgets_idle_keys_that_hold_nothing(
    api: APIClient, order_type: None, django_capture_on_commit_callbacks: Any
) -> None:
    endpoint = _endpoint(api, "http://127.0.0.1:9/o", ordering="per_key")
    with django_capture_on_commit_callbacks(execute=False):
        _post(api, [{"data": {}, "ordering_key": "done"}, {"data": {}, "ordering_key": "open"}])
    Delivery.objects.filter(ordering_key="done").update(status="succeeded")
    later = timezone.now() + timedelta(seconds=1)
    # both idle since before `later`; only the one with nothing pending is forgotten
    assert ordering.keys_prune(idle_before=later) == 1
    assert set(OrderingSequence.objects.values_list("key", flat=True)) == {"open"}
    assert set(OrderingKey.objects.values_list("key", flat=True)) == {"open"}
    # used again, its numbers start at 1
    with django_capture_on_commit_callbacks(execute=False):
        _post(api, [{"data": {}, "ordering_key": "done"}])
    again = (
        Delivery.objects.filter(ordering_key="done")
        .order_by("-id")
        .values_list("sequence", "endpoint_id")[0]
    )
    assert again == (1, endpoint["id"])
