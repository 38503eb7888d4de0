"""The per-process sending machinery: HTTP threads and per-endpoint lanes, with a batching
recorder and a lease renewer (`deliveries.recorder`) and a breaker per endpoint
(`deliveries.breaker`).

A `deliver_batch` task claims its deliveries and hands them here; it does not wait for the HTTP
answers. One event loop thread sends them all (aiohttp, pooled keep-alive connections,
`webhooks.atransport`), at most `threads` requests at once; results go on a queue, and one
recorder thread writes them to PostgreSQL in bulk (one transaction per flush). So a consumer
that hangs holds one of those request slots, never the worker's task loop, and a batch is
recorded in a handful of statements. The loop replaced a pool of 64 sending threads: a request
costs a few coroutine steps instead of a thread switch per socket operation (issue 15).

Bounds, per worker process:
- `WEBHOOKS_SEND_THREADS` requests at once (the name is from when each was a thread);
- `WEBHOOKS_MAX_IN_FLIGHT` deliveries between claim and record; a task blocks (back-pressure)
  when they are all taken, so memory stays bounded whatever the consumers do;
- `WEBHOOKS_ENDPOINT_CONCURRENCY` requests at once to one endpoint; more wait in its lane;
- `WEBHOOKS_ENDPOINT_QUEUE` deliveries in one endpoint's lane (sending + waiting); beyond that
  they go back to the database for later (`deferred`), so a slow endpoint cannot fill the process.

Leases: a claim holds its row for `WEBHOOKS_LEASE_SECONDS`. A request is started only while the
claim's lease outlasts the request's whole deadline, so even a worker cut off from PostgreSQL
never sends past its lease; and one thread renews the leases of every claim still held here
(waiting in a lane, being sent, waiting to be recorded), so a claim that waits or a recording
that waits out a database hiccup is not taken back by the sweeper and sent a second time.

The rows stay the truth: if the process dies, claimed rows come back when their lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from webhooks import atransport, transport

from . import traces
from .breaker import Breakers
from .job import Job
from .recorder import LeaseRenewer, Recorder

logger = logging.getLogger(__name__)


@dataclass
class _Lane:
    active: dict[int, Job] = field(default_factory=dict)  # id(job) -> job handed to the loop
    waiting: deque[Job] = field(default_factory=deque)


@dataclass(frozen=True)
class Admission:
    """How many jobs a lane took; the rest wait `defer` seconds, published again by the task
    itself (`soon`) or by the sweeper."""

    taken: int
    defer: float
    soon: bool


# Ends that say an endpoint hangs: no answer in time.
TIMEOUTS = frozenset({"read_timeout", "connect_timeout"})

# A request starts only if its claim's lease has this many seconds left after its deadline:
# time for the answer to reach the recorder before the lease could be taken back.
START_MARGIN = 1.0


# The longest a full lane hands deliveries back for. 300 s held a slow endpoint's deliveries
# for minutes after the consumer had been stopped for 20 s (every request then looked hung):
# its p50/p99 in the chaos soak went from 2.1/26.8 s to 17.5/231 s.
MAX_HAND_BACK = 15.0


class Sender:
    """Sends jobs on an event loop and records them in batches through `record(jobs)`.

    `renew(jobs)` extends the leases of claims still held here (setting `claim.lease` to the new
    expiry of each one renewed) and returns the delivery ids whose lease was taken back.
    """

    def __init__(
        self,
        *,
        record: Callable[[list[Job]], None],
        renew: Callable[[list[Job]], Collection[int]],
        threads: int,
        max_in_flight: int,
        endpoint_concurrency: int,
        endpoint_queue: int,
        slow_after: float,
        breaker_threshold: int,
        breaker_cooldown: float,
        lease: float,
        connect_timeout: float,
        max_response_bytes: int,
        flush_max: int = 500,
        proxy: str | None = None,
    ) -> None:
        self._proxy = proxy  # every request leaves through it (WEBHOOKS_EGRESS_PROXY)
        self._max_in_flight = max_in_flight
        self._endpoint_concurrency = endpoint_concurrency
        self._endpoint_queue = endpoint_queue
        self._slow_after = slow_after
        self._breakers = Breakers(threshold=breaker_threshold, cooldown=breaker_cooldown)
        self._lease = lease
        self._answered: set[str] = set()  # endpoints that have answered a request
        self._latency: dict[str, float] = {}  # endpoint -> moving average request seconds
        self._last_answer: dict[str, float] = {}  # endpoint -> when it last answered (monotonic)
        self._timed_out: set[str] = set()  # endpoints whose last request ended in a timeout
        self._connect_timeout = connect_timeout
        self._max_response_bytes = max_response_bytes
        self._lanes: dict[str, _Lane] = {}
        self._held_back: set[str] = set()  # slow lanes with jobs waiting for the thread budget
        self._slow_share = max(1, threads // 2)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._changed = threading.Condition(self._lock)  # in-flight count went down
        self._moved = threading.Condition(self._lock)  # a job started, or was given back
        self._held: dict[int, Job] = {}  # id(job) -> every job admitted and not yet recorded
        self._recorder = Recorder(record, self._recorded, flush_max=flush_max)
        self._renewer = LeaseRenewer(renew, self._held_due, lease=lease)
        self._tasks: set[asyncio.Task[None]] = set()  # running sends (the loop keeps weak refs)
        self._loop = _new_loop()
        self._gate = asyncio.Semaphore(threads)  # requests at once
        self._client: atransport.Client | None = None
        ready = threading.Event()
        threading.Thread(
            target=self._run_loop, args=(ready,), name="webhook-send", daemon=True
        ).start()
        ready.wait()
        # The loop's thread waits for the GIL while the task or the recorder computes; the
        # default 5 ms switch interval made each GIL hand-over cost up to 5 ms (with the
        # sending threads, paced p50 at half peak went from 54 to 31 ms with 1 ms).
        sys.setswitchinterval(0.001)

    def _run_loop(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._client = self._loop.run_until_complete(_new_client(self._proxy))
        ready.set()
        self._loop.run_forever()

    def _start(self, jobs: Sequence[Job]) -> None:
        """Start sending `jobs` (on the loop's thread)."""
        for job in jobs:
            task = self._loop.create_task(self._send(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # --- intake (the task's thread) ---

    def acquire(self, count: int) -> None:
        """Take `count` in-flight slots, blocking while the process is full (back-pressure)."""
        with self._lock:
            while self._in_flight + count > self._max_in_flight:
                self._changed.wait()
            self._in_flight += count

    def _release(self, count: int) -> None:
        with self._lock:
            self._in_flight -= count
            self._changed.notify_all()

    def admit(self, endpoint_id: str, jobs: Sequence[Job]) -> Admission:
        """Queue jobs on the endpoint's lane and say what to do with the ones not taken.

        - breaker open: none taken; the rest wait in the database until the cooldown ends;
        - otherwise up to `endpoint_queue` sending and waiting (twice its concurrency until one
          request has ended); the rest come back when the lane has drained
          about half its queue (`_drain_seconds`, 1 s for a fast endpoint).

        A slow endpoint is not parked: its lane drains at `endpoint_concurrency` requests at a
        time, as fast as it answers. Parking a lane whose oldest request had run 2 s kept an
        endpoint answering in 0.5-3 s at about half its rate, its deliveries minutes late, and
        on a busy machine parked healthy endpoints whose requests were only starved of CPU.
        What protects the other endpoints is the thread budget (`_may_start`), the timeout and
        the breaker.
        """
        now = time.monotonic()
        with self._lock:
            cooling = self._breakers.open_for(endpoint_id, now)
            if cooling:
                return Admission(0, cooling, soon=False)
            lane = self._lanes.setdefault(endpoint_id, _Lane())
            # Until one of its requests has ended, a lane queues only a little: an endpoint
            # that hangs from the start must not collect a large queue before its timeouts
            # open its breaker.
            answered = endpoint_id in self._answered
            limit = self._endpoint_queue if answered else 2 * self._endpoint_concurrency
            room = max(0, limit - len(lane.active) - len(lane.waiting))
            taken = list(jobs[:room])
            start = []
            for job in taken:
                self._held[id(job)] = job
                lane.waiting.append(job)
            while lane.waiting and self._may_start(endpoint_id, lane, now):
                start.append(self._activate(endpoint_id, lane))
            defer = self._drain_seconds(endpoint_id, lane, now) if len(taken) < len(jobs) else 1.0
            # A full lane of an endpoint that hangs hands back to the sweeper, which paces a
            # failing endpoint: published again on a countdown, its deliveries were claimed and
            # handed back every few seconds, half the worker's time with half the endpoints
            # hanging (issue 15). A lane that is only slow publishes them (`_hanging`).
            soon = not self._hanging(endpoint_id, lane, now)
            if not lane.active and not lane.waiting:
                del self._lanes[endpoint_id]
        if start:
            self._loop.call_soon_threadsafe(self._start, start)
        return Admission(len(taken), defer, soon=soon)

    def _drain_seconds(self, endpoint_id: str, lane: _Lane | None, now: float) -> float:
        """When jobs the lane had no room for should come back (lock held): when its next
        request is expected to end (each end makes room for one), at least 1 s and at most
        `MAX_HAND_BACK`.

        A running request is expected to take the endpoint's recent average; one that has run
        longer is expected to run as long again. A lane of an endpoint answering in 0.5-3 s
        ends a request every fraction of a second, and hands back for a second; a lane whose
        requests hang hands back for about as long as they have hung.

        A fixed second made a lane that is full because its endpoint hangs hand the same
        deliveries back, claim them and refuse them again every second, thousands a second
        after a few seconds of a hanging endpoint, and the healthy endpoints' deliveries
        waited behind that churn. Half the time the whole queue takes to drain, for every full
        lane, cost the endpoint answering in 0.5-3 s: in the chaos soak its p50 from acceptance
        went from 2.1 to 17.5 s."""
        if lane is None:
            return 1.0
        latency = self._latency.get(endpoint_id, 0.0)
        ages = [now - job.begun for job in lane.active.values() if job.begun]
        if not ages:
            return 1.0
        next_end = min(latency - age if age < latency else age for age in ages)
        return min(MAX_HAND_BACK, max(1.0, next_end))

    def _stalled(self, endpoint_id: str, lane: _Lane, now: float) -> bool:
        """A lane is stalled while its endpoint is slow and has not *answered* for
        `slow_after`: it hangs (or has stopped), it is not only slow. Slow: a request has run
        `slow_after` here, or its requests take longer than that on average.

        Timeouts are not answers: counting any end as a sign of life made a lane of an
        endpoint hanging to its timeout look alive for `slow_after` after each round of
        timeouts, while its next requests were young; every task with a job for it then held
        its process for the whole hand-off wait, and the healthy endpoints' deliveries queued
        behind those tasks (p50 1.5-2 s at half peak with half the endpoints hanging)."""
        if now - self._last_answer.get(endpoint_id, 0.0) <= self._slow_after:
            return False
        return self._slow(lane, now) or self._latency.get(endpoint_id, 0.0) > self._slow_after

    def _hanging(self, endpoint_id: str, lane: _Lane, now: float) -> bool:
        """Whether an endpoint hangs rather than answers slowly (lock held): its last request
        ended in a timeout with no answer since, or it has not answered for twice its usual
        time (at least `slow_after`) while a request has been running that long. An endpoint
        answering in 0.8 s, one request at a time, is slow between its answers, not hanging."""
        if endpoint_id in self._timed_out:
            return True
        patience = max(self._slow_after, 2 * self._latency.get(endpoint_id, 0.0))
        if now - self._last_answer.get(endpoint_id, 0.0) <= patience:
            return False
        return any(job.begun and now - job.begun > patience for job in lane.active.values())

    def _slow(self, lane: _Lane, now: float) -> bool:
        """A lane is slow while a request has been running at its endpoint for `slow_after`,
        counted from when it really started (a job queued for a thread says nothing about the
        endpoint)."""
        return any(job.begun and now - job.begun > self._slow_after for job in lane.active.values())

    def _may_start(self, endpoint_id: str, lane: _Lane, now: float) -> bool:
        """Whether the lane may start its next request (lock held): below its concurrency, and,
        for a slow lane, while slow lanes together hold less than half the threads, so
        endpoints that hang can never take every thread from the ones that answer. A lane held
        back waits in memory (its leases renewed) and starts when a slow request ends."""
        if len(lane.active) >= self._endpoint_concurrency:
            return False
        if not self._slow(lane, now):
            return True
        slow_running = sum(
            len(other.active) for other in self._lanes.values() if self._slow(other, now)
        )
        if slow_running < self._slow_share:
            return True
        self._held_back.add(endpoint_id)
        return False

    def _activate(self, endpoint_id: str, lane: _Lane) -> Job:
        job = lane.waiting.popleft()
        lane.active[id(job)] = job
        return job

    def wait_started(self, jobs: Sequence[Job], timeout: float) -> bool:
        """Wait until every job has started its request or been given back, at most `timeout`
        seconds; whether they all did.

        The task that handed the jobs over waits here, so its worker process stays busy while
        its lanes are full and Celery hands the next messages to the process's siblings, whose
        lanes are free. Returning at once let one prefork child take nearly every message: an
        endpoint answering in 0.5-3 s got one child's `endpoint_concurrency` of a worker's four
        (9.5 requests/s of the 16.7/s offered, p50 24 s from acceptance to 2xx).

        Jobs in a stalled lane (its endpoint is slow and has not answered for `slow_after`,
        `_stalled`) do not hold the task: an endpoint hanging to its timeout kept every message that
        named it waiting the whole bound, and the healthy endpoints' deliveries in the next
        messages waited behind it (p50 at half peak 35 ms -> 1.2-14 s in `make bench-quick`).
        A lane that is only slow, its requests ending, still holds it: letting every slow lane
        go had one child take the messages of an endpoint answering in 0.5-3 s again (p50
        from acceptance 2.1 -> 16.8 s in the chaos soak).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while not all(self._started_or_stalled(job) for job in jobs):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._moved.wait(min(remaining, 0.05))  # a lane may stall meanwhile
        return True

    def _started_or_stalled(self, job: Job) -> bool:
        """Whether a job no longer holds its task (lock held): started, given back, or waiting
        in a stalled lane."""
        if job.begun or job.deferred is not None:
            return True
        lane = self._lanes.get(job.claim.endpoint_id)
        return lane is None or self._stalled(job.claim.endpoint_id, lane, time.monotonic())

    def paused_endpoints(self) -> list[str]:
        """Endpoints whose breaker is open in this process right now."""
        now = time.monotonic()
        with self._lock:
            return self._breakers.paused(now)

    def give_back(self, count: int) -> None:
        """Return slots taken for jobs that were not admitted."""
        if count:
            self._release(count)

    def finish(self, job: Job) -> None:
        """Record a job that needs no request (refused target, disabled endpoint)."""
        with self._lock:
            self._held[id(job)] = job
        self._recorder.put(job)

    # --- sending (the event loop's thread) ---

    async def _send(self, job: Job) -> None:
        async with self._gate:
            if job.lost or not self._lease_covers(job):
                # its lease was taken back, or would not outlast the request (renewals
                # failing: the database is away): give it back rather than risk a second,
                # concurrent send
                job.deferred = 0.0
                job.result = None
                self._recorder.put(job)
                self._next_in_lane(job)
                with self._lock:
                    self._moved.notify_all()
                return
            try:
                with self._lock:
                    job.begun = time.monotonic()
                    self._moved.notify_all()
                if job.trace is not None:  # tracing on (deliveries.traces)
                    traces.send_started(job)
                job.started_at = time.time()
                assert self._client is not None  # made before the loop runs anything
                job.result = await self._client.post(
                    job.url,
                    job.body,
                    job.headers,
                    timeout=job.timeout,
                    connect_timeout=self._connect_timeout,
                    max_response_bytes=self._max_response_bytes,
                    address=job.address,
                )
            except Exception as exc:  # noqa: BLE001 - a bug must still end as a recorded attempt
                logger.exception("sending delivery %s failed unexpectedly", job.claim.delivery_id)
                job.result = transport.TransportResult(
                    status_code=None,
                    duration_ms=0.0,
                    error=repr(exc)[:500],
                    error_class="protocol",
                )
            if job.span is not None:
                traces.send_ended(job)
        self._recorder.put(job)
        self._next_in_lane(job)

    @staticmethod
    def _lease_covers(job: Job) -> bool:
        left = job.claim.lease.timestamp() - time.time()
        return left >= job.timeout + START_MARGIN

    def _next_in_lane(self, job: Job) -> None:
        """The job left its lane: note its answer, and start the next one waiting there."""
        endpoint_id = job.claim.endpoint_id
        now = time.monotonic()
        with self._lock:
            lane = self._lanes[endpoint_id]
            del lane.active[id(job)]
            if job.result is not None and job.result.status_code is not None:
                if len(self._last_answer) > 100_000:
                    self._last_answer.clear()
                self._last_answer[endpoint_id] = now
                self._timed_out.discard(endpoint_id)
            elif job.result is not None and job.result.error_class in TIMEOUTS:
                if len(self._timed_out) > 100_000:
                    self._timed_out.clear()
                self._timed_out.add(endpoint_id)
            if job.result is not None and endpoint_id not in self._answered:
                if len(self._answered) > 100_000:  # bounded memory; they re-prove themselves
                    self._answered.clear()
                self._answered.add(endpoint_id)
            if job.result is not None and job.begun:
                if len(self._latency) > 100_000:
                    self._latency.clear()
                took = now - job.begun
                before = self._latency.get(endpoint_id, took)
                self._latency[endpoint_id] = before + 0.2 * (took - before)
            if job.result is not None and self._breakers.note(endpoint_id, job.result, now):
                # the breaker just opened: what waits here goes back to the database
                for waiting in lane.waiting:
                    waiting.deferred = self._breakers.cooldown
                    self._recorder.put(waiting)
                lane.waiting.clear()
                self._moved.notify_all()
            # one request ended: start the next one here, or in a slow lane held back
            following = None
            for candidate in (endpoint_id, *self._held_back):
                other = self._lanes.get(candidate)
                if other is None or not other.waiting:
                    self._held_back.discard(candidate)
                elif self._may_start(candidate, other, now):
                    self._held_back.discard(candidate)
                    following = self._activate(candidate, other)
                    break
            if not lane.active and not lane.waiting:
                del self._lanes[endpoint_id]
        if following is not None:
            self._start([following])

    # --- the recorder's and the renewer's callbacks ---

    def _recorded(self, jobs: list[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._held.pop(id(job), None)
        self._release(len(jobs))

    def _held_due(self, soon: float) -> list[Job]:
        """Jobs held here whose claim's lease ends before `soon`."""
        with self._lock:
            return [j for j in self._held.values() if j.claim.lease.timestamp() < soon]

    def drain(self, timeout: float) -> bool:
        """Wait until every admitted job is recorded (worker shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True


async def _new_client(proxy: str | None = None) -> atransport.Client:
    return atransport.Client(proxy=proxy)


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (a dependency on Linux and macOS), else asyncio's own."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
