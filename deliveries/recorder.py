"""The sender's two background threads: the recorder, which writes finished jobs to PostgreSQL in
batches, and the lease renewer, which keeps the claims of jobs still held from expiring.

Both run for the life of the worker process; the sender hands them jobs and callbacks, and
neither touches its lanes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Collection

from django.db import InterfaceError, OperationalError

from deliveries import traces
from deliveries.job import Job
from webhooks_project import tracing

logger = logging.getLogger("deliveries.sender")


class Recorder:
    """Writes finished jobs through `record(jobs)`, up to `flush_max` at a time (one transaction
    per flush), then calls `recorded(jobs)`."""

    def __init__(
        self,
        record: Callable[[list[Job]], None],
        recorded: Callable[[list[Job]], None],
        *,
        flush_max: int,
    ) -> None:
        self._record = record
        self._recorded = recorded
        self._flush_max = flush_max
        self._done: queue.Queue[Job] = queue.Queue()
        threading.Thread(target=self._loop, name="webhook-recorder", daemon=True).start()

    def put(self, job: Job) -> None:
        self._done.put(job)

    def _loop(self) -> None:
        while True:
            batch = [self._done.get()]
            while len(batch) < self._flush_max:
                try:
                    batch.append(self._done.get_nowait())
                except queue.Empty:
                    break
            traced = tracing.ENABLED and any(job.trace is not None for job in batch)
            start = time.time_ns() if traced else 0
            self._record_with_retry(batch)
            if traced:
                traces.recorded(batch, start_ns=start, end_ns=time.time_ns())
            self._recorded(batch)

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


def renew_every(lease: float) -> float:
    """Seconds between lease renewals: a sixth of the lease, at most 2 s. A held claim is renewed
    once it is that old, so while renewals succeed its lease has at least `lease - 2 * every`
    left, at least `lease - 4`: with the lease at least the request timeout + 5 (settings
    refuse less), a claim that waited in its lane can still start (`START_MARGIN`)."""
    return max(0.2, min(2.0, lease / 6))


class LeaseRenewer:
    """Every `renew_every(lease)` seconds, renews the claims of the jobs `held(soon)` answers
    (those whose lease ends before `soon`) through `renew(jobs)`, which sets each renewed
    `claim.lease` and returns the delivery ids whose lease was taken back; their jobs are
    marked `lost`, so they are given back rather than sent."""

    def __init__(
        self,
        renew: Callable[[list[Job]], Collection[int]],
        held: Callable[[float], list[Job]],
        *,
        lease: float,
    ) -> None:
        self._renew = renew
        self._held = held
        self._lease = lease
        threading.Thread(target=self._loop, name="webhook-leases", daemon=True).start()

    def _loop(self) -> None:
        every = renew_every(self._lease)
        while True:
            time.sleep(every)
            # renew what was claimed or last renewed more than one interval ago
            due = self._held(time.time() + self._lease - every)
            if due:
                self.renew(due)

    def renew(self, jobs: list[Job]) -> None:
        try:
            lost = set(self._renew(jobs))
        except Exception:  # noqa: BLE001 - the next round tries again; the check before
            # each start keeps an unrenewed claim from being sent past its lease
            logger.warning("renewing %d leases failed", len(jobs), exc_info=True)
            return
        for job in jobs:
            if job.claim.delivery_id in lost:
                job.lost = True
        if lost:
            logger.warning("%d claims held here were taken back meanwhile", len(lost))
