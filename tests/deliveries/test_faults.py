"""Fault tests: real processes broken on purpose; each asserts that nothing accepted was lost.

Each test runs its own Redis, gunicorn, worker and beat (short leases and sweeps through settings,
never by changing defaults) against the test database and the local sink.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from django.utils import timezone

from deliveries.models import Delivery, DeliveryAttempt, DeliveryTotal, Event, OrderingKey
from deliveries.services.claims import deliveries_claim
from deliveries.services.enqueue import FEED_KEY
from devstack.services import LocalRedis
from schemas_app.services import event_type_create
from tests.conftest import BASE_DIR, WebServer, WorkerProcess, wait_idle, wait_until, worker_env
from tests.sink import Sink
from webhooks.services import api_key_create, endpoint_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

FAST = {
    "WEBHOOKS_LEASE_SECONDS": 8,
    "WEBHOOKS_REQUEUE_INTERVAL": 1,
    "WEBHOOKS_REDISPATCH_AFTER": 2,
    "WEBHOOKS_COUNTDOWN_MAX": 1,
    "WEBHOOKS_HTTP_TIMEOUT": 3,
}


@dataclass
class Stack:
    tmp: Path
    redis: LocalRedis
    env: dict[str, str]
    web: WebServer | None = None
    worker: WorkerProcess | None = None
    beat: WorkerProcess | None = None
    key: str = ""

    def start_worker(self, *, default_command: bool = False) -> WorkerProcess:
        self.worker = WorkerProcess(
            self.env, ["--concurrency", "2"], default_command=default_command
        ).start()
        return self.worker

    def start_beat(self) -> WorkerProcess:
        # PersistentScheduler keeps the beat schedule in a file: the test database is flushed
        # between tests, which a DatabaseScheduler would not survive.
        self.beat = WorkerProcess(
            self.env,
            ["-S", "celery.beat:PersistentScheduler", "-s", str(self.tmp / "beat-schedule")],
            role="beat",
        ).start()
        return self.beat

    def post_event(self, data: dict[str, Any], **fields: Any) -> tuple[int, dict[str, Any]]:
        assert self.web is not None
        request = urllib.request.Request(
            self.web.url + "/api/v1/events/",
            data=json.dumps({"type": "order.created", "data": data, **fields}).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())

    def stop(self) -> None:
        for proc in (self.beat, self.worker, self.web):
            if proc is not None:
                proc.stop()
        self.redis.stop()


@pytest.fixture
def stack(sink: Sink) -> Iterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="faults-"))
    rd = LocalRedis(tmp / "redis", persist=False).start()
    env = worker_env(REDIS_URL=rd.url(), **FAST)
    event_type_create(name="order.created", schema={"type": "object"})
    _, key = api_key_create(name="faults", scopes=["events:write", "read"])
    s = Stack(tmp=tmp, redis=rd, env=env, key=key)
    s.web = WebServer(env).start()
    yield s
    s.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def _kill_the_sender(worker: WorkerProcess, sink: Sink) -> None:
    """SIGKILL the worker process that holds a connection to the sink (mid-request)."""
    assert worker.proc is not None
    children = psutil.Process(worker.proc.pid).children(recursive=True)
    holder = next(
        c
        for c in children
        if any(conn.raddr and conn.raddr.port == sink.port for conn in c.net_connections("tcp"))
    )
    holder.send_signal(signal.SIGKILL)


def _all_succeeded(count: int) -> bool:
    return Delivery.objects.filter(status="succeeded").count() == count


def test_worker_killed_mid_request_is_delivered_after_the_lease(stack: Stack, sink: Sink) -> None:
    # given a consumer that holds the first request open, and a worker and beat
    sink.plan("slow", 200, first_delay=8)
    endpoint_create(url=sink.url("slow"))
    worker = stack.start_worker()
    stack.start_beat()
    status, event = stack.post_event({"n": 1})
    assert status == 202
    sink.wait_for(1, "slow")
    # when the worker process holding that request is SIGKILLed
    _kill_the_sender(worker, sink)
    # then, after the lease expires, the delivery is made again and succeeds
    wait_until(lambda: _all_succeeded(1), timeout=40)
    delivery = Delivery.objects.get(event_id=event["id"])
    attempts = list(DeliveryAttempt.objects.filter(delivery=delivery).order_by("number"))
    # the killed try is in the audit log, recorded by the sweeper with what is known of it
    assert [(a.number, a.outcome, a.error_class) for a in attempts] == [
        (1, "unknown", "worker_lost"),
        (2, "succeeded", ""),
    ]
    assert delivery.attempt_count == 2
    # and the metrics count it
    assert DeliveryTotal.objects.get(endpoint_id=delivery.endpoint_id).lost == 1
    # the consumer saw the request twice (unavoidable: we died mid-request), same webhook-id
    requests = sink.requests("slow")
    assert len(requests) == 2
    assert {r.headers["webhook-id"] for r in requests} == {event["id"]}


def test_broker_down_at_ingest_then_back_delivers_everything(stack: Stack, sink: Sink) -> None:
    endpoint_create(url=sink.url("ok"))
    stack.start_worker()
    stack.start_beat()
    # given Redis stopped
    stack.redis.stop()
    # when events are posted, then the API still accepts them
    ids = []
    for n in range(10):
        status, event = stack.post_event({"n": n})
        assert status == 202
        ids.append(event["id"])
    assert Delivery.objects.filter(status="pending").count() == 10
    # when Redis comes back (empty: nothing of the lost publishes survives)
    stack.redis = LocalRedis(stack.tmp / "redis", port=stack.redis.port, persist=False).start()
    # then the sweeper rebuilds the work from PostgreSQL and all are delivered, once each
    wait_until(lambda: _all_succeeded(10), timeout=60)
    received = sorted(json.loads(r.body)["data"]["n"] for r in sink.requests("ok"))
    assert received == list(range(10))


def test_queued_messages_lost_with_redis_are_rebuilt(stack: Stack, sink: Sink) -> None:
    # given events accepted while no worker runs: their messages wait in Redis (on the feed)
    endpoint_create(url=sink.url("ok"))
    for n in range(10):
        assert stack.post_event({"n": n})[0] == 202
    assert redis.Redis.from_url(stack.redis.url()).llen(FEED_KEY) == 10
    # when Redis is killed and restarts empty
    stack.redis.stop(kill=True)
    stack.redis = LocalRedis(stack.tmp / "redis", port=stack.redis.port, persist=False).start()
    assert redis.Redis.from_url(stack.redis.url()).llen(FEED_KEY) == 0
    stack.start_worker()
    stack.start_beat()
    # then everything is delivered from the rows, once each
    wait_until(lambda: _all_succeeded(10), timeout=60)
    assert sorted(json.loads(r.body)["data"]["n"] for r in sink.requests("ok")) == list(range(10))


def test_two_sweeps_at_once_publish_each_due_row_once(stack: Stack) -> None:
    # given 1,000 due rows with no live message (parked retries)
    endpoint, _ = endpoint_create(url="http://127.0.0.1:9/x")
    past = timezone.now() - timedelta(seconds=5)
    events = Event.objects.bulk_create(
        Event(event_type_id="order.created", data={"n": n}) for n in range(1000)
    )
    Delivery.objects.bulk_create(
        Delivery(event=e, endpoint=endpoint, next_attempt_at=past, dispatched_at=None)
        for e in events
    )
    # when two sweeper processes run at the same moment
    results = _sweep_twice_at_once(stack.env)
    # then together they published 1,000 messages, one per row
    assert sum(r["published"] for r in results) == 1000
    client = redis.Redis.from_url(stack.redis.url())
    messages = client.lrange("retries", 0, -1)
    ids = [i for m in messages for i in json.loads(_body(m))[0][0]]  # deliver_batch(ids)
    assert len(ids) == 1000
    assert len(set(ids)) == 1000


def _sweep_twice_at_once(env: dict[str, str]) -> list[dict[str, int]]:
    """Two sweeper processes (`manage.py requeue_stuck`) started together; their results."""
    procs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "requeue_stuck"],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    return [json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in procs]


def _body(message: bytes) -> str:
    import base64

    return base64.b64decode(json.loads(message)["body"]).decode()


def test_a_parked_retry_is_attempted_exactly_once_despite_a_short_visibility_timeout(
    stack: Stack, sink: Sink
) -> None:
    # given a 1 s visibility timeout and a retry delay (6 s) longer than it and than the
    # countdown limit, so the retry is parked in the row
    stack.env["CELERY_VISIBILITY_TIMEOUT"] = "1"
    sink.plan("later", 500, 200)
    endpoint_create(url=sink.url("later"), retry_schedule=[6])
    stack.start_worker()
    stack.start_beat()
    stack.post_event({"n": 1})
    first = sink.wait_for(1, "later")[0]
    # when the delay passes
    wait_until(lambda: _all_succeeded(1), timeout=30)
    wait_idle(stack.redis.url())
    # then the consumer got exactly two requests, the second after the parked delay
    requests = sink.requests("later")
    assert len(requests) == 2
    assert requests[1].at - first.at >= 5.0
    assert DeliveryAttempt.objects.count() == 2


@pytest.mark.parametrize("queue", [FEED_KEY, "deliveries"])
def test_two_copies_of_the_same_task_send_once(stack: Stack, sink: Sink, queue: str) -> None:
    # given a delivery whose message is duplicated in the broker: on the feed, or on the Celery
    # queue that carries fresh work with the feed off
    if queue == "deliveries":
        assert stack.web is not None
        stack.web.stop()
        stack.env["WEBHOOKS_DIRECT_FEED"] = "false"
        stack.web = WebServer(stack.env).start()
    sink.plan("dup", 200, delay=0.5)
    endpoint_create(url=sink.url("dup"))
    stack.post_event({"n": 1})
    client = redis.Redis.from_url(stack.redis.url())
    (message,) = client.lrange(queue, 0, -1)
    for _ in range(3):
        client.lpush(queue, message)
    # when two worker processes take the copies at once
    stack.start_worker()
    wait_until(lambda: _all_succeeded(1), timeout=30)
    wait_idle(stack.redis.url())
    # then the consumer received one request
    assert len(sink.requests("dup")) == 1
    assert DeliveryAttempt.objects.count() == 1


def test_workers_ride_out_redis_restarting_empty_under_load(stack: Stack, sink: Sink) -> None:
    # given the default worker command (gossip, mingle and heartbeat as shipped), busy: a slow
    # consumer keeps deliveries in flight, so the worker holds unacknowledged messages
    sink.plan("busy", 200, delay=0.3)
    endpoint_create(url=sink.url("busy"))
    worker = stack.start_worker(default_command=True)
    stack.start_beat()
    assert worker.proc is not None
    pids = _pool_pids(worker)
    for n in range(60):
        assert stack.post_event({"n": n})[0] == 202
    sink.wait_for(5, "busy")
    # when Redis is killed under that load and comes back empty on the same port
    stack.redis.stop(kill=True)
    shutil.rmtree(stack.tmp / "redis", ignore_errors=True)
    stack.redis = LocalRedis(stack.tmp / "redis", port=stack.redis.port, persist=False).start()
    for n in range(60, 80):
        assert stack.post_event({"n": n})[0] == 202
    # then everything is delivered, by the same worker processes, which never exited
    wait_until(lambda: _all_succeeded(80) or worker.proc.poll() is not None, timeout=120)
    assert worker.proc.poll() is None, "".join(worker.output[-60:])
    assert _pool_pids(worker) == pids
    assert "Unrecoverable error" not in "".join(worker.output)
    received = {json.loads(r.body)["data"]["n"] for r in sink.requests("busy")}
    assert received == set(range(80))


def _pool_pids(worker: WorkerProcess) -> set[int]:
    assert worker.proc is not None
    return {worker.proc.pid, *(c.pid for c in psutil.Process(worker.proc.pid).children())}


# Ordered delivery (issue 16): the same faults, for an endpoint that sends each key's events one
# at a time in order. The sink counts a second request of a key arriving while one is open.


def _sequences(sink: Sink, name: str) -> dict[str, list[int]]:
    """Per ordering key, the sequence of each request in the order they arrived."""
    seen: dict[str, list[int]] = {}
    for r in sink.requests(name):
        seen.setdefault(r.headers["webhook-ordering-key"], []).append(
            int(r.headers["webhook-sequence"])
        )
    return seen


def test_an_ordered_key_waits_out_its_worker_killed_mid_request(stack: Stack, sink: Sink) -> None:
    # given a consumer that holds key a's first request (2 s, far less than the 8 s lease)
    sink.plan("o#a", 200, first_delay=2)
    endpoint_create(url=sink.url("o"), ordering="per_key")
    worker = stack.start_worker()
    stack.start_beat()
    for n in range(3):
        assert stack.post_event({"n": n}, ordering_key="a")[0] == 202
    (first,) = sink.wait_for(1, "o")
    assert first.headers["webhook-sequence"] == "1"
    # when the worker process holding it (the only one that has sent anything) is SIGKILLed
    _kill_the_sender(worker, sink)
    # (another key goes meanwhile)
    assert stack.post_event({"n": 9}, ordering_key="b")[0] == 202
    # then, after the lease, a's head is sent again, and only then the rest of a, in order
    wait_until(lambda: _all_succeeded(4), timeout=60)
    assert _sequences(sink, "o") == {"a": [1, 1, 2, 3], "b": [1]}
    assert sink.overlaps == []
    head = Delivery.objects.get(ordering_key="a", sequence=1)
    assert list(head.attempts.order_by("number").values_list("outcome", flat=True)) == [
        "unknown",
        "succeeded",
    ]


def test_ordered_keys_are_rebuilt_in_order_after_redis_empties(stack: Stack, sink: Sink) -> None:
    # given ordered events accepted while no worker runs (each key's head is on the feed)
    sink.plan("o", 200, delay=0.01)
    endpoint_create(url=sink.url("o"), ordering="per_key")
    for n in range(15):
        assert stack.post_event({"n": n}, ordering_key=f"k{n % 3}")[0] == 202
    assert redis.Redis.from_url(stack.redis.url()).llen(FEED_KEY) == 3
    # when Redis is killed and restarts empty
    stack.redis.stop(kill=True)
    stack.redis = LocalRedis(stack.tmp / "redis", port=stack.redis.port, persist=False).start()
    stack.start_worker()
    stack.start_beat()
    # then every key is delivered whole, in order, one at a time
    wait_until(lambda: _all_succeeded(15), timeout=60)
    assert _sequences(sink, "o") == {f"k{i}": [1, 2, 3, 4, 5] for i in range(3)}
    assert sink.overlaps == []


def test_two_sweeps_at_once_take_back_each_ordered_head_once(stack: Stack, sink: Sink) -> None:
    # given 20 keys of 4 events each, whose heads were claimed by a worker that died (their
    # leases ran out): the heads in flight, each key's slot taken, the rest held
    sink.plan("o", 200, delay=0.01)
    endpoint_create(url=sink.url("o"), ordering="per_key")
    for n in range(80):
        assert stack.post_event({"n": n}, ordering_key=f"k{n % 20}")[0] == 202
    heads = list(Delivery.objects.filter(sequence=1).values_list("id", flat=True))
    assert len(heads) == 20
    claims = deliveries_claim(delivery_ids=heads, now=timezone.now())
    assert len(claims) == 20
    Delivery.objects.filter(id__in=heads).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    redis.Redis.from_url(stack.redis.url()).delete(FEED_KEY)
    # when two sweeper processes run at the same moment
    results = _sweep_twice_at_once(stack.env)
    # then each head was taken back once and published once; every key's slot is free, and
    # its later events are still held
    assert sum(r["reclaimed"] for r in results) == 20
    assert sum(r["published"] for r in results) == 20
    assert not OrderingKey.objects.filter(in_flight__isnull=False).exists()
    held = Delivery.objects.filter(status="pending", next_attempt_at__isnull=True)
    assert held.count() == 60
    # and a worker then delivers every key in order, one at a time
    stack.start_worker()
    wait_until(lambda: _all_succeeded(80), timeout=60)
    assert _sequences(sink, "o") == {f"k{i}": [1, 2, 3, 4] for i in range(20)}
    assert sink.overlaps == []
