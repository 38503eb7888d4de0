"""The per-process sender against a real local HTTP sink: lanes, the breaker, back-pressure.

The recorder is replaced by a list (the database path is covered by the end-to-end tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from deliveries.job import Job
from deliveries.sender import Sender, _Lane
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


class Leases:
    """Stands in for the database's leases: renews every claim unless told it was taken."""

    def __init__(self, lease: float = 60.0) -> None:
        self.lease = lease
        self.taken: set[int] = set()
        self.renewed: list[int] = []

    def __call__(self, jobs: list[Job]) -> set[int]:
        until = datetime.now(UTC) + timedelta(seconds=self.lease)
        for job in jobs:
            if job.claim.delivery_id not in self.taken:
                job.claim.lease = until
                self.renewed.append(job.claim.delivery_id)
        return {j.claim.delivery_id for j in jobs} & self.taken


def make_sender(
    recorded: Callable[[list[Job]], None], renew: Leases | None = None, **overrides: float
) -> Sender:
    options = {**_OPTIONS, **overrides}
    return Sender(record=recorded, renew=renew or Leases(options["lease"]), **options)


def lease_of(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def jobs(
    sink: Sink, path: str, count: int, endpoint: str, timeout: float = 5.0, lease: float = 60.0
) -> list[Job]:
    return [
        Job(
            claim=SimpleNamespace(endpoint_id=endpoint, delivery_id=n, lease=lease_of(lease)),
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


def test_a_slow_endpoint_within_its_timeout_drains_at_its_full_concurrency(
    sink: Sink, recorded: Recorded
) -> None:
    # given an endpoint answering in 0.8 s, past slow_after (0.5 s) but within its timeout
    sink.plan("slow", 200, delay=0.8)
    sender = make_sender(recorded, endpoint_concurrency=3, endpoint_queue=20)
    sender.acquire(13)
    assert sender.admit("ep_slow", jobs(sink, "slow", 1, "ep_slow")).taken == 1
    wait_until(lambda: recorded.sent(), timeout=10)
    # when a backlog arrives while its requests are running (it looks slow)
    assert sender.admit("ep_slow", jobs(sink, "slow", 3, "ep_slow")).taken == 3
    wait_until(lambda: len(sink.requests("slow")) == 4, timeout=10)
    time.sleep(0.6)  # its requests have now run past slow_after
    later = jobs(sink, "slow", 9, "ep_slow")
    admission = sender.admit("ep_slow", later)
    # then it is taken, not parked in the database, and sent three at a time
    assert (admission.taken, admission.soon) == (9, True)
    assert sender.drain(timeout=30)
    assert recorded.deferred() == []
    assert len(recorded.sent()) == 13
    assert all(j.result and j.result.status_code == 200 for j in recorded.sent())


def test_a_full_lane_of_an_endpoint_that_hangs_hands_back_to_the_sweeper(
    sink: Sink, recorded: Recorded
) -> None:
    # given an endpoint whose requests hang (past slow_after, 0.5 s, and no answer yet)
    sink.plan("hang", 200, delay=3)
    sender = make_sender(recorded, endpoint_concurrency=2)
    first = jobs(sink, "hang", 4, "ep_hang", timeout=2)
    sender.acquire(len(first))
    assert sender.admit("ep_hang", first).taken == 4
    wait_until(lambda: len(sink.requests("hang")) == 2)
    started = time.monotonic()
    wait_until(lambda: time.monotonic() - started > 0.6)  # its requests run past slow_after
    # when more arrive than its lane holds
    more = jobs(sink, "hang", 3, "ep_hang", timeout=2)
    sender.acquire(len(more))
    admission = sender.admit("ep_hang", more)
    # then they are not published again on a countdown: the sweeper paces a failing endpoint
    assert (admission.taken, admission.soon) == (0, False)
    sender.give_back(len(more))
    assert sender.drain(timeout=30)
    assert {j.result.error_class for j in recorded.sent() if j.result} == {"read_timeout"}


def test_slow_lanes_together_get_at_most_half_the_threads(recorded: Recorded) -> None:
    # given 8 threads, and lanes whose requests have all run past slow_after
    sender = make_sender(recorded, threads=8, endpoint_concurrency=4)
    now = time.monotonic()

    def lane(endpoint: str, running: int, begun: float) -> Any:
        lane = sender._lanes.setdefault(endpoint, _Lane())
        for _ in range(running):
            job = Job(claim=SimpleNamespace(endpoint_id=endpoint), begun=begun)
            lane.active[id(job)] = job
        return lane

    slow_a = lane("ep_a", 3, now - 5)
    fast = lane("ep_fast", 3, now - 0.1)
    with sender._lock:
        # three slow requests of four allowed: one more may start
        assert sender._may_start("ep_a", slow_a, now) is True
        slow_b = lane("ep_b", 1, now - 5)
        # four slow requests: no slow lane may start another, a fast one still may
        assert sender._may_start("ep_a", slow_a, now) is False
        assert sender._may_start("ep_b", slow_b, now) is False
        assert sender._may_start("ep_fast", fast, now) is True
        assert sender._held_back == {"ep_a", "ep_b"}


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


def test_a_held_claim_is_renewed_and_sent_after_waiting_longer_than_its_lease(
    sink: Sink, recorded: Recorded
) -> None:
    # given a 6 s lease and an endpoint taking one request at a time, 1 s each
    sink.plan("queue", 200, delay=1.0)
    leases = Leases(lease=6.0)
    sender = make_sender(recorded, leases, endpoint_concurrency=1, lease=6.0, slow_after=10.0)
    batch = jobs(sink, "queue", 8, "ep_queue", timeout=2.0, lease=6.0)
    for n, job in enumerate(batch):
        job.claim.delivery_id = n
    sender.acquire(8)
    assert sender.admit("ep_queue", batch[:1]).taken == 1
    wait_until(lambda: recorded.sent(), timeout=10)
    # when seven wait in its lane (the last one about 7 s, longer than its lease)
    assert sender.admit("ep_queue", batch[1:]).taken == 7
    assert sender.drain(timeout=30)
    # then their leases were kept alive while they waited, and all were sent
    assert len(recorded.sent()) == 8
    assert len(sink.requests("queue")) == 8
    assert {5, 6, 7} <= set(leases.renewed)


def test_a_claim_whose_lease_was_taken_back_or_runs_short_is_given_back_not_sent(
    sink: Sink, recorded: Recorded
) -> None:
    # given a claim the sweeper takes back while it waits in its lane (found at the first
    # renewal, 1 s in), and one whose lease will not outlast its request (renewals failing:
    # the database is away)
    sink.plan("queue", 200, delay=2.0)
    leases = Leases(lease=6.0)
    leases.taken = {1}
    sender = make_sender(recorded, leases, endpoint_concurrency=1, lease=6.0, slow_after=10.0)
    batch = jobs(sink, "queue", 2, "ep_queue", timeout=3.0, lease=6.0)
    batch[1].claim.delivery_id = 1
    batch[1].claim.lease = lease_of(5.0)  # claimed a second ago: renewed at the first round
    short = jobs(sink, "short", 1, "ep_short", timeout=5.0, lease=5.5)  # 5 s request
    short[0].claim.delivery_id = 7
    sender.acquire(3)
    sender.admit("ep_queue", batch)
    sender.admit("ep_short", short)
    assert sender.drain(timeout=20)
    # then only the first was sent; the others went back to the database, unsent
    assert [j.claim.delivery_id for j in recorded.sent()] == [0]
    assert sorted(j.claim.delivery_id for j in recorded.deferred()) == [1, 7]
    assert len(sink.requests("queue")) == 1
    assert sink.requests("short") == []


def test_a_job_whose_recording_fails_for_good_does_not_stop_recording(sink: Sink) -> None:
    # given a recorder that always refuses one job (a bug, not a database outage)
    recorded = Recorded()

    def record(batch: list[Job]) -> None:
        if any(job.claim.delivery_id == 3 for job in batch):
            raise ValueError("cannot record delivery 3")
        recorded(batch)

    sender = make_sender(record, endpoint_concurrency=8, endpoint_queue=50)

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


def test_the_task_waits_until_its_requests_have_started_within_a_bound(
    sink: Sink, recorded: Recorded
) -> None:
    # given a lane taking one request at a time, busy with a 1 s request
    sink.plan("busy", 200, delay=1.0)
    sender = make_sender(recorded, endpoint_concurrency=1, slow_after=10.0)
    first, second = jobs(sink, "busy", 2, "ep_busy")
    second.claim.delivery_id = 1
    sender.acquire(2)
    sender.admit("ep_busy", [first, second])
    # when the task waits for the second to start: not within 0.1 s, then once the first ends
    assert sender.wait_started([second], timeout=0.1) is False
    assert sender.wait_started([second], timeout=10) is True
    assert second.begun
    assert sender.drain(timeout=10)


def test_a_job_waiting_in_a_stalled_lane_does_not_hold_the_task(
    sink: Sink, recorded: Recorded
) -> None:
    # given a lane taking one request at a time, whose request has run past `slow_after`
    sink.plan("hang", 200, delay=5.0)
    sender = make_sender(recorded, endpoint_concurrency=1, slow_after=0.3)
    first, second = jobs(sink, "hang", 2, "ep_hang")
    second.claim.delivery_id = 1
    sender.acquire(2)
    sender.admit("ep_hang", [first, second])
    wait_until(lambda: first.begun and time.monotonic() - first.begun > 0.3, timeout=10)
    # when the task waits for the second, which cannot start before the first ends (5 s)
    # then the wait ends without it: a slow lane does not keep the task from its next message
    assert sender.wait_started([second], timeout=2.5) is True
    assert not second.begun
    assert sender.drain(timeout=20)


def test_a_lane_whose_requests_only_time_out_does_not_hold_the_task_after_each_round(
    sink: Sink, recorded: Recorded
) -> None:
    # given an endpoint that never answers, one request at a time, whose first request has
    # just timed out (2.5 s, longer than `slow_after`), so its next one is young
    sink.plan("hang", 200, delay=30.0)
    sender = make_sender(recorded, endpoint_concurrency=1, slow_after=2.0)
    first, second, third = jobs(sink, "hang", 3, "ep_hang", timeout=2.5)
    for number, job in enumerate((second, third), start=1):
        job.claim.delivery_id = number
    sender.acquire(3)
    assert sender.admit("ep_hang", [first, second]).taken == 2
    wait_until(lambda: first.result is not None and bool(second.begun), timeout=20)
    assert first.result is not None
    assert first.result.error_class == "read_timeout"
    # when a task hands it a third, which cannot start before the second times out, and waits
    assert sender.admit("ep_hang", [third]).taken == 1
    # then it does not wait: a timeout is not an answer, and the lane is known to hang (its
    # requests take longer than `slow_after`), although its running request is young
    assert sender.wait_started([third], timeout=1.0) is True
    assert not third.begun
    assert sender.drain(timeout=20)


def test_a_job_waiting_in_a_slow_lane_whose_requests_end_holds_the_task(
    sink: Sink, recorded: Recorded
) -> None:
    # given a lane of two at a time that has answered once, with one request hanging past
    # `slow_after` while short ones keep ending beside it
    sink.plan("fast", 200)
    sink.plan("hang", 200, delay=15.0)
    sink.plan("short", 200, delay=0.1)
    # (`slow_after` 2 s: a loaded machine may stretch the gap between two short answers well
    # past their 0.1 s without the lane looking stalled)
    sender = make_sender(recorded, endpoint_concurrency=2, endpoint_queue=100, slow_after=2.0)
    (first,) = jobs(sink, "fast", 1, "ep_mixed")
    sender.acquire(82)
    sender.admit("ep_mixed", [first])
    wait_until(lambda: first.result is not None, timeout=10)
    (hanging,) = jobs(sink, "hang", 1, "ep_mixed")
    short = jobs(sink, "short", 80, "ep_mixed")  # at least 8 s of them, one at a time
    for number, job in enumerate(short, start=2):
        job.claim.delivery_id = number
    assert sender.admit("ep_mixed", [hanging, *short]).taken == 81
    wait_until(lambda: hanging.begun and time.monotonic() - hanging.begun > 2.0, timeout=10)
    # when the task waits for the last short one
    # then it waits until it has started: the lane is slow, not stalled
    assert sender.wait_started([short[-1]], timeout=60) is True
    assert short[-1].begun
    assert sender.drain(timeout=30)


def test_a_hung_lane_hands_the_rest_back_for_about_as_long_as_it_has_hung(
    sink: Sink, recorded: Recorded
) -> None:
    # given a fast endpoint whose lane is full: the rest come back in a second
    sink.plan("fast", 200)
    sink.plan("hang", 200, delay=5.0)
    sender = make_sender(recorded, endpoint_concurrency=1, endpoint_queue=2)
    sender.acquire(9)
    assert sender.admit("ep_fast", jobs(sink, "fast", 3, "ep_fast")).defer == 1.0
    # and a hanging one whose lane (two jobs, one at a time) has had a request running 2 s
    hanging = jobs(sink, "hang", 2, "ep_hang")
    assert sender.admit("ep_hang", hanging).taken == 2
    wait_until(lambda: hanging[0].begun and time.monotonic() - hanging[0].begun > 2.0, timeout=10)
    # when more jobs come for it
    admission = sender.admit("ep_hang", jobs(sink, "hang", 4, "ep_hang"))
    # then none are taken, and they come back when the running request, which has run 2 s
    # with no answer yet, may have ended: not in a second, to be claimed and refused again
    assert admission.taken == 0
    assert 2.0 <= admission.defer <= 5.0  # (under MAX_HAND_BACK, 15 s)
    sender.give_back(4 + 1)
    assert sender.drain(timeout=30)


def test_a_full_lane_whose_requests_are_ending_hands_the_rest_back_in_a_second(
    sink: Sink, recorded: Recorded
) -> None:
    # given a slow but answering endpoint (1.5 s a request, past `slow_after`), one at a time
    sink.plan("slow", 200, delay=1.5)
    sender = make_sender(recorded, endpoint_concurrency=1, endpoint_queue=3)
    slow = jobs(sink, "slow", 2, "ep_slow")
    sender.acquire(6)
    assert sender.admit("ep_slow", slow).taken == 2
    # whose lane is full (three jobs) once its first request has ended
    wait_until(lambda: bool(slow[1].begun), timeout=10)
    assert sender.admit("ep_slow", jobs(sink, "slow", 2, "ep_slow")).taken == 2
    # and whose second request has run past `slow_after`
    wait_until(lambda: time.monotonic() - slow[1].begun > 0.6, timeout=10)
    # when more jobs come for it
    admission = sender.admit("ep_slow", jobs(sink, "slow", 2, "ep_slow"))
    # then the rest come back in a second: the second request should end in under a second
    assert admission.taken == 0
    assert admission.defer == 1.0
    sender.give_back(2)
    assert sender.drain(timeout=30)
