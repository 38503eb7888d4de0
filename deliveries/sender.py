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
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from webhooks import transport

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    """One claimed delivery on its way out: what to send, and what came back."""

    claim: Any  # services.Claim
    url: str = ""
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stored_headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 15.0
    started_at: float = 0.0  # time.time() when the request started
    result: transport.TransportResult | None = None


@dataclass
class _Lane:
    active: int = 0
    waiting: deque[Job] = field(default_factory=deque)


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
        connect_timeout: float,
        max_response_bytes: int,
        flush_max: int = 500,
    ) -> None:
        self._record = record
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="webhook-send")
        self._slots = threading.Semaphore(max_in_flight)
        self._max_in_flight = max_in_flight
        self._endpoint_concurrency = endpoint_concurrency
        self._endpoint_queue = endpoint_queue
        self._connect_timeout = connect_timeout
        self._max_response_bytes = max_response_bytes
        self._flush_max = flush_max
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self._done: queue.Queue[Job] = queue.Queue()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._recorder = threading.Thread(
            target=self._record_loop, name="webhook-recorder", daemon=True
        )
        self._recorder.start()

    # --- intake (the task's thread) ---

    def acquire(self, count: int) -> None:
        """Take `count` in-flight slots, blocking while the process is full (back-pressure)."""
        for _ in range(count):
            self._slots.acquire()
        with self._lock:
            self._in_flight += count

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()
        with self._lock:
            self._in_flight -= count
            if self._in_flight == 0:
                self._idle.notify_all()

    def admit(self, endpoint_id: str, jobs: Sequence[Job]) -> int:
        """Queue jobs on the endpoint's lane, up to its limit; returns how many were taken."""
        with self._lock:
            lane = self._lanes.setdefault(endpoint_id, _Lane())
            room = max(0, self._endpoint_queue - lane.active - len(lane.waiting))
            taken = list(jobs[:room])
            start = []
            for job in taken:
                if lane.active < self._endpoint_concurrency:
                    lane.active += 1
                    start.append(job)
                else:
                    lane.waiting.append(job)
        for job in start:
            self._executor.submit(self._send, job)
        return len(taken)

    def give_back(self, count: int) -> None:
        """Return slots taken for jobs that were not admitted."""
        if count:
            self._release(count)

    def finish(self, job: Job) -> None:
        """Record a job that needs no request (refused target, disabled endpoint)."""
        self._done.put(job)

    # --- sending (pool threads) ---

    def _send(self, job: Job) -> None:
        try:
            job.started_at = time.time()
            job.result = transport.post(
                job.url,
                job.body,
                job.headers,
                timeout=job.timeout,
                connect_timeout=self._connect_timeout,
                max_response_bytes=self._max_response_bytes,
            )
        except Exception as exc:  # noqa: BLE001 - a bug must still end as a recorded attempt
            logger.exception("sending delivery %s failed unexpectedly", job.claim.delivery_id)
            job.result = transport.TransportResult(
                status_code=None, duration_ms=0.0, error=repr(exc)[:500], error_class="protocol"
            )
        self._done.put(job)
        endpoint_id = job.claim.endpoint_id
        with self._lock:
            lane = self._lanes[endpoint_id]
            following = lane.waiting.popleft() if lane.waiting else None
            if following is None:
                lane.active -= 1
                if lane.active == 0:
                    del self._lanes[endpoint_id]
        if following is not None:
            self._executor.submit(self._send, following)

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
        delay = 0.5
        while True:
            try:
                self._record(batch)
                return
            except Exception:  # noqa: BLE001 - our database is away: keep the results, retry
                logger.exception(
                    "recording %d attempts failed; retrying in %.1f s", len(batch), delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def drain(self, timeout: float) -> bool:
        """Wait until every admitted job is recorded (worker shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True


_senders: dict[int, Sender] = {}
_senders_lock = threading.Lock()


def get_sender(factory: Callable[[], Sender]) -> Sender:
    """The sender of this process (prefork children each build their own after the fork)."""
    pid = os.getpid()
    sender = _senders.get(pid)
    if sender is None:
        with _senders_lock:
            sender = _senders.get(pid)
            if sender is None:
                sender = factory()
                _senders.clear()
                _senders[pid] = sender
    return sender


def current_sender() -> Sender | None:
    return _senders.get(os.getpid())
