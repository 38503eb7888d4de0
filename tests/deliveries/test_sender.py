"""The per-process sender against a real local HTTP sink: lanes, the breaker, back-pressure.

The recorder is replaced by a list (the database path is covered by the end-to-end tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from deliveries.sender import Job, Sender
from tests.conftest import wait_until
from tests.sink import Sink


class Recorded:
    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.lock = threading.Lock()

    def __call__(self, jobs: list[Job]) -> None:
        with self.lock:
            self.jobs.extend(jobs)

    def sent(self) -> list[Job]:
        with self.lock:
            return [j for j in self.jobs if j.deferred is None]

    def deferred(self) -> list[Job]:
        with self.lock:
            return [j for j in self.jobs if j.deferred is not None]


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


_OPTIONS: dict[str, Any] = {
    "threads": 8,
    "max_in_flight": 100,
    "endpoint_concurrency": 2,
    "endpoint_queue": 10,
    "slow_after": 0.5,
    "breaker_threshold": 3,
    "breaker_cooldown": 60.0,
    "lease": 60.0,
    "connect_timeout": 1.0,
    "max_response_bytes": 100,
}


def make_sender(recorded: Recorded, **overrides: float) -> Sender:
    return Sender(record=recorded, **{**_OPTIONS, **overrides})


def jobs(sink: Sink, path: str, count: int, endpoint: str, timeout: float = 5.0) -> list[Job]:
    return [
        Job(
            claim=SimpleNamespace(endpoint_id=endpoint, delivery_id=n),
            url=sink.url(path),
            body=b"{}",
            headers={"content-type": "application/json"},
            timeout=timeout,
        )
        for n in range(count)
    ]


@pytest.fixture
def sink(sink_server: Sink) -> Iterator[Sink]:
    sink_server.reset()
    yield sink_server
    sink_server.reset()


def test_a_fast_endpoint_takes_a_burst_up_to_its_lane_and_the_rest_come_back_soon(
    sink: Sink, recorded: Recorded
) -> None:
    sender = make_sender(recorded)
    # before any answer, a lane queues only twice its concurrency
    first = jobs(sink, "fast", 6, "ep_fast")
    sender.acquire(len(first))
    assert sender.admit("ep_fast", first).taken == 4
    sender.give_back(2)
    wait_until(lambda: len(recorded.sent()) >= 1)
    # once the endpoint has answered, its lane holds a burst up to `endpoint_queue`
    sink.plan("fast", 200, delay=0.3)  # keep them in the lane while the burst arrives
    batch = jobs(sink, "fast", 15, "ep_fast")
    sender.acquire(len(batch))
    admission = sender.admit("ep_fast", batch)
    assert admission.soon is True
    assert admission.taken >= 7  # 10 minus what may still be in the lane from the first four
    sender.give_back(len(batch) - admission.taken)
    assert sender.drain(timeout=10)
    assert len(recorded.sent()) == 4 + admission.taken
    assert all(j.result and j.result.status_code == 200 for j in recorded.sent())


def test_consecutive_failures_open_the_breaker_and_what_waits_goes_back(
    sink: Sink, recorded: Recorded
) -> None:
    sink.plan("down", 503, delay=0.2)
    sender = make_sender(recorded)
    first = jobs(sink, "down", 1, "ep_down")  # an answer first: the lane may then queue 10
    sender.acquire(1)
    sender.admit("ep_down", first)
    wait_until(lambda: len(recorded.sent()) == 1)  # answered (503) and recorded
    batch = jobs(sink, "down", 10, "ep_down")
    sender.acquire(len(batch))
    assert sender.admit("ep_down", batch).taken == 10  # 2 sending, 8 waiting
    assert sender.drain(timeout=10)
    # the third failure in a row opened the breaker (the fourth request was already running):
    # the jobs still waiting were not sent
    assert len(recorded.sent()) == 1 + 3
    assert len(recorded.deferred()) == 7
    assert {j.deferred for j in recorded.deferred()} == {60.0}
    assert len(sink.requests("down")) == 4
    # while it is open, nothing is taken, for the rest of the cooldown
    admission = sender.admit("ep_down", jobs(sink, "down", 5, "ep_down"))
    assert admission.taken == 0
    assert admission.soon is False
    assert 55 < admission.defer <= 60


def test_a_success_closes_the_breaker(sink: Sink, recorded: Recorded) -> None:
    sink.plan("flaky", 500, 500, 200, 200)
    sender = make_sender(recorded, endpoint_concurrency=1)
    for _ in range(4):  # one at a time: 500, 500, 200, 200
        sender.acquire(1)
        assert sender.admit("ep_flaky", jobs(sink, "flaky", 1, "ep_flaky")).taken == 1
        assert sender.drain(timeout=10)
    sender.acquire(1)
    assert sender.admit("ep_flaky", jobs(sink, "flaky", 1, "ep_flaky")).taken == 1
    assert sender.drain(timeout=10)
    assert [j.result.status_code for j in recorded.sent()] == [500, 500, 200, 200, 200]


def test_a_hanging_endpoint_becomes_slow_and_takes_no_more_while_others_flow(
    sink: Sink, recorded: Recorded
) -> None:
    sink.plan("hang", 200, delay=3)
    sender = make_sender(recorded, threads=4)
    hanging = jobs(sink, "hang", 2, "ep_hang", timeout=1.0)
    sender.acquire(2)
    assert sender.admit("ep_hang", hanging).taken == 2
    time.sleep(0.7)  # past slow_after: its oldest request is still running
    later = jobs(sink, "hang", 3, "ep_hang", timeout=1.0)
    admission = sender.admit("ep_hang", later)
    assert (admission.taken, admission.soon, admission.defer) == (0, False, 1.0)
    # a healthy endpoint is not held up by it
    sender.acquire(4)
    assert sender.admit("ep_ok", jobs(sink, "ok", 4, "ep_ok")).taken == 4
    wait_until(lambda: len([j for j in recorded.sent() if j.claim.endpoint_id == "ep_ok"]) == 4)
    assert sender.drain(timeout=10)
    timeouts = [j for j in recorded.sent() if j.claim.endpoint_id == "ep_hang"]
    assert [j.result.error_class for j in timeouts] == ["read_timeout", "read_timeout"]


def test_slots_bound_what_a_process_holds(sink: Sink, recorded: Recorded) -> None:
    sink.plan("slow", 200, delay=0.5)
    sender = make_sender(recorded, max_in_flight=4, endpoint_queue=100)
    sender.acquire(4)
    sender.admit("ep_slow", jobs(sink, "slow", 4, "ep_slow"))
    took = []
    waiter = threading.Thread(target=lambda: (sender.acquire(2), took.append(time.monotonic())))
    started = time.monotonic()
    waiter.start()
    waiter.join(timeout=10)
    # the fifth and sixth slot were only free once recorded answers released some
    assert took
    assert took[0] - started >= 0.4
    sender.give_back(2)
    assert sender.drain(timeout=10)


def test_a_job_that_waited_past_its_lease_is_given_back_not_sent(
    sink: Sink, recorded: Recorded
) -> None:
    # lease 2 s: a job must start within half of it, 1 s, of being admitted
    sink.plan("queue", 200, delay=1.5)
    sender = make_sender(recorded, endpoint_concurrency=1, lease=2.0, slow_after=10.0)
    batch = jobs(sink, "queue", 2, "ep_queue", timeout=2.0)
    sender.acquire(2)
    assert sender.admit("ep_queue", batch).taken == 2
    assert sender.drain(timeout=20)
    # the first was sent; the second waited behind its 1.5 s answer, past its start-by time
    assert len(recorded.sent()) == 1
    assert [j.deferred for j in recorded.deferred()] == [0.0]
    assert len(sink.requests("queue")) == 1


def test_a_job_whose_recording_fails_for_good_does_not_stop_recording(sink: Sink) -> None:
    # given a recorder that always refuses one job (a bug, not a database outage)
    recorded = Recorded()

    def record(batch: list[Job]) -> None:
        if any(job.claim.delivery_id == 3 for job in batch):
            raise ValueError("cannot record delivery 3")
        recorded(batch)

    sender = Sender(record=record, **{**_OPTIONS, "endpoint_concurrency": 8, "endpoint_queue": 50})

    # when a batch including that job is sent, and then another batch
    sender.acquire(6)
    sender.admit("ep", jobs(sink, "ok", 6, "ep"))
    wait_until(lambda: sender.drain(timeout=0.1), timeout=10)
    later = jobs(sink, "ok", 2, "ep")
    for job in later:
        job.claim.delivery_id += 100
    sender.acquire(2)
    sender.admit("ep", later)

    # then every other job is recorded, the later ones too, and nothing stays in flight
    wait_until(lambda: len(recorded.sent()) == 7, timeout=10)
    assert sorted(j.claim.delivery_id for j in recorded.sent()) == [0, 1, 2, 4, 5, 100, 101]
    assert sender.drain(timeout=5)
