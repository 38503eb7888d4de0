"""The per-process sending machinery: HTTP threads, per-endpoint lanes, and a batching recorder.

A `deliver_batch` task claims its deliveries and hands them here; it does not wait for the HTTP
answers. Threads send (pooled keep-alive connections), results go on a queue, and one recorder
thread writes them to PostgreSQL in bulk (one transaction per flush). So a consumer that hangs
holds a thread, never the worker's task loop, and a batch is recorded in a handful of statements.

Bounds, per worker process:
- `WEBHOOKS_MAX_IN_FLIGHT` deliveries between claim and record; a task blocks (back-pressure)
  when they are all taken, so memory stays bounded whatever the consumers do;
- `WEBHOOKS_ENDPOINT_CONCURRENCY` requests at once to one endpoint; more wait in its lane;
- `WEBHOOKS_ENDPOINT_QUEUE` deliveries in one endpoint's lane (sending + waiting); beyond that
  they go back to the database for later (`deferred`), so a slow endpoint cannot fill the process.

The rows stay the truth: if the process dies, claimed rows come back when their lease expires.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.db import InterfaceError, OperationalError

from webhooks import transport

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    """One claimed delivery on its way out: what to send, and what came back."""

    claim: Any  # services.Claim
    url: str = ""
    address: str | None = None  # the checked IP to connect to (webhooks.ssrf.Target)
    body: bytes = b""
    stored_body: bytes | None = None  # what the attempt log keeps, if not `body` (sealed fields)
    headers: dict[str, str] = field(default_factory=dict)
    stored_headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 15.0
    started_at: float = 0.0  # time.time() when the request started
    result: transport.TransportResult | None = None
    deferred: float | None = None  # not sent: give the claim back for this many seconds
    start_by: float = 0.0  # monotonic time after which starting would outlive the claim's lease
    begun: float = 0.0  # monotonic time when its request started (0: not yet)


@dataclass
class _Lane:
    active: dict[int, Job] = field(default_factory=dict)  # id(job) -> job handed to the pool
    waiting: deque[Job] = field(default_factory=deque)


@dataclass(frozen=True)
class Admission:
    """How many jobs a lane took; the rest wait `defer` seconds, published again by the task
    itself (`soon`) or by the sweeper."""

    taken: int
    defer: float
    soon: bool


@dataclass
class _Health:
    """A circuit breaker per endpoint: after `threshold` failed requests in a row, the endpoint
    gets no requests for `cooldown` seconds; then the next answer closes or reopens it."""

    failures: int = 0
    open_until: float = 0.0


def failed(result: transport.TransportResult) -> bool:
    """Whether an answer says the endpoint is down or overloaded (not: the request was bad)."""
    code = result.status_code
    return code is None or code >= 500 or code in (408, 429)


class Sender:
    """Sends jobs on a thread pool and records them in batches through `record(jobs)`."""

    def __init__(
        self,
        *,
        record: Callable[[list[Job]], None],
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
    ) -> None:
        self._record = record
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="webhook-send")
        self._max_in_flight = max_in_flight
        self._endpoint_concurrency = endpoint_concurrency
        self._endpoint_queue = endpoint_queue
        self._slow_after = slow_after
        self._breaker_threshold = breaker_threshold
        self._breaker_cooldown = breaker_cooldown
        self._lease = lease
        self._health: dict[str, _Health] = {}
        self._answered: set[str] = set()  # endpoints that have answered a request
        self._connect_timeout = connect_timeout
        self._max_response_bytes = max_response_bytes
        self._flush_max = flush_max
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self._done: queue.Queue[Job] = queue.Queue()
        self._in_flight = 0
        self._changed = threading.Condition(self._lock)  # in-flight count went down
        self._recorder = threading.Thread(
            target=self._record_loop, name="webhook-recorder", daemon=True
        )
        self._recorder.start()
        # Sending threads wait for the GIL while the task or the recorder computes; the default
        # 5 ms switch interval made each of a request's several GIL hand-overs cost up to 5 ms
        # (paced p50 at half peak went from 54 to 31 ms with 1 ms).
        sys.setswitchinterval(0.001)

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
        - slow (its oldest request has run `slow_after` seconds): none taken; the rest wait in
          the database for as long as the lane's backlog could take at the endpoint's timeout;
        - otherwise up to `endpoint_queue` sending and waiting (twice its concurrency until one
          request has ended); the rest come back in a second (a burst larger than the lane).
        """
        now = time.monotonic()
        with self._lock:
            health = self._health.get(endpoint_id)
            if health is not None and health.open_until > now:
                return Admission(0, health.open_until - now, soon=False)
            lane = self._lanes.setdefault(endpoint_id, _Lane())
            # Slow means a request has been running at the endpoint for `slow_after`, counted
            # from when it really started: a job still queued for a thread (this process busy
            # with many lanes, or starved of CPU) says nothing about the endpoint. Counting
            # from admission made a fast endpoint look slow with many worker processes, and
            # its deliveries were parked for the sweeper (8 processes on 2 CPUs: 291/s).
            begun = [job.begun for job in lane.active.values() if job.begun]
            if begun and now - min(begun) > self._slow_after:
                # come back when the lane could have drained: its backlog at the endpoint's
                # timeout per request, `endpoint_concurrency` at a time (at most 10 minutes)
                backlog = (len(lane.active) + len(lane.waiting)) / self._endpoint_concurrency
                timeout = max(job.timeout for job in jobs)
                return Admission(0, min(600.0, timeout * max(1.0, backlog)), soon=False)
            # Until one of its requests has ended, a lane queues only a little: an endpoint
            # that hangs from the start must not collect a large queue before it looks slow.
            answered = endpoint_id in self._answered
            limit = self._endpoint_queue if answered else 2 * self._endpoint_concurrency
            room = max(0, limit - len(lane.active) - len(lane.waiting))
            taken = list(jobs[:room])
            start = []
            for job in taken:
                # one that waits in its lane for half its lease is given back rather than sent
                # late, so a claim is not taken back by the sweeper while it is still queued
                job.start_by = now + self._lease / 2
                if len(lane.active) < self._endpoint_concurrency:
                    lane.active[id(job)] = job
                    start.append(job)
                else:
                    lane.waiting.append(job)
            if not lane.active and not lane.waiting:
                del self._lanes[endpoint_id]
        for job in start:
            self._executor.submit(self._send, job)
        return Admission(len(taken), 1.0, soon=True)

    def paused_endpoints(self) -> list[str]:
        """Endpoints whose breaker is open in this process right now."""
        now = time.monotonic()
        with self._lock:
            return [e for e, health in self._health.items() if health.open_until > now]

    def give_back(self, count: int) -> None:
        """Return slots taken for jobs that were not admitted."""
        if count:
            self._release(count)

    def finish(self, job: Job) -> None:
        """Record a job that needs no request (refused target, disabled endpoint)."""
        self._done.put(job)

    # --- sending (pool threads) ---

    def _send(self, job: Job) -> None:
        if time.monotonic() > job.start_by:
            # it waited in its lane too long to finish inside its lease: give it back
            job.deferred = 0.0
            job.result = None
            self._done.put(job)
            self._next_in_lane(job)
            return
        try:
            job.begun = time.monotonic()
            job.started_at = time.time()
            job.result = transport.post(
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
                status_code=None, duration_ms=0.0, error=repr(exc)[:500], error_class="protocol"
            )
        self._done.put(job)
        self._next_in_lane(job)

    def _next_in_lane(self, job: Job) -> None:
        """The job left its lane: note its answer, and start the next one waiting there."""
        endpoint_id = job.claim.endpoint_id
        now = time.monotonic()
        with self._lock:
            lane = self._lanes[endpoint_id]
            del lane.active[id(job)]
            if job.result is not None and endpoint_id not in self._answered:
                if len(self._answered) > 100_000:  # bounded memory; they re-prove themselves
                    self._answered.clear()
                self._answered.add(endpoint_id)
            if job.result is not None and self._note(endpoint_id, job.result, now):
                # the breaker just opened: what waits here goes back to the database
                for waiting in lane.waiting:
                    waiting.deferred = self._breaker_cooldown
                    self._done.put(waiting)
                lane.waiting.clear()
            following = lane.waiting.popleft() if lane.waiting else None
            if following is not None:
                lane.active[id(following)] = following
            elif not lane.active:
                del self._lanes[endpoint_id]
        if following is not None:
            self._executor.submit(self._send, following)

    def _note(self, endpoint_id: str, result: transport.TransportResult, now: float) -> bool:
        """Feed the endpoint's breaker (lock held); True when this answer opened it."""
        if not failed(result):
            self._health.pop(endpoint_id, None)
            return False
        health = self._health.setdefault(endpoint_id, _Health())
        health.failures += 1
        if health.failures >= self._breaker_threshold and health.open_until <= now:
            health.open_until = now + self._breaker_cooldown
            health.failures = self._breaker_threshold - 1  # after the cooldown, one more trips it
            logger.warning(
                "endpoint %s: %d failed requests in a row, pausing it for %.0f s",
                endpoint_id,
                self._breaker_threshold,
                self._breaker_cooldown,
            )
            return True
        return False

    # --- recording (one thread) ---

    def _record_loop(self) -> None:
        while True:
            batch = [self._done.get()]
            while len(batch) < self._flush_max:
                try:
                    batch.append(self._done.get_nowait())
                except queue.Empty:
                    break
            self._record_with_retry(batch)
            self._release(len(batch))

    def _record_with_retry(self, batch: list[Job]) -> None:
        """Record a batch; wait out our database being away, never wedge on one bad job.

        Connection errors are retried until the database answers (the results are kept). Any
        other error is a fault in some job of the batch: each job is then recorded alone, and
        one that still fails is logged and left to its lease, which the sweeper takes back so
        the delivery is sent again. Retrying it forever would stop this process's recording.
        """
        delay = 0.5
        while True:
            try:
                self._record(batch)
                return
            except (OperationalError, InterfaceError):
                logger.exception(
                    "recording %d attempts failed; retrying in %.1f s", len(batch), delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception:  # noqa: BLE001 - one bad job must not stop the others
                if len(batch) == 1:
                    logger.exception(
                        "recording delivery %s failed; its lease will expire and it is sent again",
                        batch[0].claim.delivery_id,
                    )
                    return
                logger.exception("recording %d attempts failed; one by one now", len(batch))
                for job in batch:
                    self._record_with_retry([job])
                return

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
