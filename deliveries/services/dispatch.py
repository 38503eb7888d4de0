"""Dispatch: claim the due deliveries a task names, prepare each (refusals of our own, the
envelope, the timeout) and admit them to this process's sender."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from deliveries import ratelimit
from deliveries.job import Job
from deliveries.sender import Sender
from schemas_app import payloads
from webhooks import crypto, transport
from webhooks.services import check_target, max_request_seconds
from webhooks.ssrf import BlockedTarget, Target
from webhooks_project import tracing
from webhooks_project.process_local import ProcessLocal

from .. import traces
from . import envelope
from .claims import Claim, deliveries_claim, deliveries_release, leases_renew, reschedule_unclaimed
from .recording import attempts_record

logger = logging.getLogger(__name__)


def _new_sender() -> Sender:
    return Sender(
        record=attempts_record,
        renew=leases_renew,
        threads=settings.WEBHOOKS_SEND_THREADS,
        max_in_flight=settings.WEBHOOKS_MAX_IN_FLIGHT,
        endpoint_concurrency=settings.WEBHOOKS_ENDPOINT_CONCURRENCY,
        endpoint_queue=settings.WEBHOOKS_ENDPOINT_QUEUE,
        slow_after=settings.WEBHOOKS_SLOW_AFTER,
        breaker_threshold=settings.WEBHOOKS_BREAKER_THRESHOLD,
        breaker_cooldown=settings.WEBHOOKS_BREAKER_COOLDOWN,
        lease=settings.WEBHOOKS_LEASE_SECONDS,
        connect_timeout=settings.WEBHOOKS_CONNECT_TIMEOUT,
        max_response_bytes=settings.WEBHOOKS_RESPONSE_MAX_BYTES,
        proxy=settings.WEBHOOKS_EGRESS_PROXY,
    )


# Each worker process (prefork child) builds its own sender, with its threads, after the fork.
_senders = ProcessLocal(_new_sender)


def current_sender() -> Sender | None:
    """This process's sender, if it has sent anything."""
    return _senders.current()


def _refused(job: Job, error_class: str, error: str) -> Job:
    job.started_at = time.time()
    job.result = transport.TransportResult(
        status_code=None, duration_ms=0.0, error=error[:500], error_class=error_class
    )
    return job


def _prepare(
    claim: Claim,
    *,
    sender: Sender,
    checked: dict[str, Target | BlockedTarget],
    timestamp: int,
    traced: dict[str | None, Any] | None = None,
) -> Job | None:
    """The job for one claim, signed and ready to send; None when it ended here (refused and
    finished on the sender, e.g. SSRF, an unreadable secret, a payload that cannot be built).
    `traced`: while tracing, the send spans' parents worked out so far in the batch."""
    job = Job(claim=claim)
    job.headers, job.stored_headers = envelope.request_headers(
        claim, timestamp=timestamp, user_agent=settings.WEBHOOKS_USER_AGENT
    )
    if traced is not None:
        traces.job_traced(job, traced)
    if not claim.enabled:
        sender.finish(_refused(job, "endpoint_disabled", "endpoint is disabled"))
        return None
    if claim.url not in checked:
        try:
            checked[claim.url] = check_target(claim.url)
        except BlockedTarget as exc:
            checked[claim.url] = exc
    target = checked[claim.url]
    if isinstance(target, BlockedTarget):
        sender.finish(_refused(job, "ssrf_blocked", str(target)))
        return None
    if claim.keys is None:
        sender.finish(
            _refused(
                job,
                "secret_unreadable",
                "no key in WEBHOOKS_ENCRYPTION_KEYS decrypts this endpoint's secret",
            )
        )
        return None
    try:
        built = envelope.envelope(
            claim,
            claim.keys,
            timestamp=timestamp,
            hash_key=settings.WEBHOOKS_HASH_KEY,
            decrypt=crypto.decrypt,
        )
    except (payloads.PayloadRefused, crypto.SecretUnreadable) as exc:
        sender.finish(_refused(job, "payload_invalid", str(exc)))
        return None
    job.url = claim.url
    job.address = target.address
    job.body, job.stored_body = built.body, built.stored_body
    job.headers["webhook-signature"] = built.signature
    # the attempt log keeps exactly what was sent: the signature too (it proves the body to a
    # consumer; nothing can be signed with it)
    job.stored_headers["webhook-signature"] = built.signature
    job.timeout = _request_timeout(claim)
    return job


_capped: set[str] = set()  # endpoints already warned about, per process


def _request_timeout(claim: Claim) -> float:
    """The request's deadline: the endpoint's own, else WEBHOOKS_HTTP_TIMEOUT. An endpoint
    timeout saved under a longer lease than today's is held to what the lease covers (saving
    one longer is refused), with a warning once per process."""
    most = max_request_seconds()
    timeout = claim.timeout or settings.WEBHOOKS_HTTP_TIMEOUT
    if timeout > most:
        if claim.endpoint_id not in _capped:
            _capped.add(claim.endpoint_id)
            logger.warning(
                "endpoint %s: timeout_seconds %s is longer than WEBHOOKS_LEASE_SECONDS covers; "
                "its requests get %s s",
                claim.endpoint_id,
                claim.timeout,
                most,
            )
        return most
    return timeout


def deliveries_dispatch(*, delivery_ids: Sequence[int]) -> int:
    """Claim the due deliveries among `delivery_ids` and hand them to this process's sender.

    Returns how many were claimed. It does not wait for the answers: the sender records each
    attempt when it ends. Database errors propagate before anything is sent (the task retries).

    Slots (`WEBHOOKS_MAX_IN_FLIGHT`): one per id is taken first; it is given back with each
    delivery released here (not claimed, over its rate limit, not admitted to its lane), and
    by the sender's recorder for the rest once their attempt is recorded.
    """
    close_old_connections()  # drop a broken or expired connection (Celery keeps them open)
    sender = _senders.get()
    ids = list(dict.fromkeys(delivery_ids))
    most = max(1, settings.WEBHOOKS_MAX_IN_FLIGHT // 2)
    # never wait for more slots than the process has
    with tracing.span(
        "webhooks.dispatch", kind=tracing.SpanKind.CONSUMER, attributes={"webhooks.asked": len(ids)}
    ):
        return sum(_dispatch(sender, ids[i : i + most]) for i in range(0, len(ids), most))


def _dispatch(sender: Sender, ids: list[int]) -> int:
    with tracing.span("webhooks.claim", attributes={"webhooks.asked": len(ids)}) as span:
        claims = _claim(sender, ids)
        if span is not None:
            span.set_attribute("webhooks.claimed", len(claims))
    handed: list[Job] = []
    for endpoint_id, jobs in _prepare_lanes(sender, claims).items():
        handed += _admit(sender, endpoint_id, jobs)
    # busy until they have started (bounded): the next messages go to this worker's other
    # processes meanwhile, so every process's lanes are used (Sender.wait_started)
    sender.wait_started(handed, timeout=settings.WEBHOOKS_HANDOFF_WAIT)
    return len(claims)


def _claim(sender: Sender, ids: list[int]) -> list[Claim]:
    """Take a slot per id (blocking while the process is full), claim what is due, and give
    back the slots of the rest; endpoints whose breaker is open here are not even claimed."""
    sender.acquire(len(ids))
    try:
        now = timezone.now()
        paused = sender.paused_endpoints()
        claims = deliveries_claim(delivery_ids=ids, now=now, skip_endpoints=paused)
        unclaimed = set(ids) - {c.delivery_id for c in claims}
        if unclaimed:
            reschedule_unclaimed(delivery_ids=unclaimed, now=now, skip_endpoints=paused)
    except BaseException:
        sender.give_back(len(ids))
        raise
    sender.give_back(len(unclaimed))
    return claims


def _prepare_lanes(sender: Sender, claims: list[Claim]) -> dict[str, list[Job]]:
    """The claims' jobs, signed, by endpoint; the ones refused here are finished on the sender."""
    timestamp = int(time.time())
    lanes: dict[str, list[Job]] = {}
    checked: dict[str, Target | BlockedTarget] = {}  # each URL resolved and checked once
    traced: dict[str | None, Any] | None = {} if tracing.ENABLED else None
    for claim in claims:
        try:
            job = _prepare(
                claim, sender=sender, checked=checked, timestamp=timestamp, traced=traced
            )
        except Exception as exc:  # noqa: BLE001 - one poisoned claim must not take the batch
            # anything that fails while one claim is prepared ends that claim alone, recorded
            logger.exception("delivery %s could not be prepared", claim.delivery_id)
            job = None
            sender.finish(
                _refused(
                    Job(claim=claim),
                    "payload_invalid",
                    f"the payload could not be built ({type(exc).__name__})",
                )
            )
        if job is not None:
            lanes.setdefault(claim.endpoint_id, []).append(job)
    return lanes


def _admit(sender: Sender, endpoint_id: str, jobs: list[Job]) -> list[Job]:
    """Hand one endpoint's jobs to its lane, within its rate limit; the rest are released
    (with their slots) for when they may go. Returns the jobs handed over."""
    rate = jobs[0].claim.rate_limit
    if rate:
        grant = ratelimit.take(endpoint_id, rate, len(jobs))
        if grant.granted < len(jobs):
            _defer_over_rate(jobs[grant.granted :], grant=grant, rate=rate)
            sender.give_back(len(jobs) - grant.granted)
            jobs = jobs[: grant.granted]
            if not jobs:
                return []
    admission = sender.admit(endpoint_id, jobs)
    rest = jobs[admission.taken :]
    if rest:
        deliveries_release(
            claims=[j.claim for j in rest],
            delay=admission.defer,
            publish=admission.soon and admission.defer <= settings.WEBHOOKS_COUNTDOWN_MAX,
        )
        sender.give_back(len(rest))
    return jobs[: admission.taken]


def _defer_over_rate(jobs: Sequence[Job], *, grant: ratelimit.Grant, rate: int) -> None:
    """Give back claims over the endpoint's rate limit, each due at the slot promised to it (to
    a tenth of a second): soon ones ride on a countdown message, later ones wait for the
    sweeper."""
    due: dict[float, list[Claim]] = {}
    for job, delay in zip(jobs, ratelimit.due_in(grant, rate, len(jobs)), strict=True):
        due.setdefault(max(1, math.ceil(delay * 10)) / 10, []).append(job.claim)
    for delay, claims in due.items():
        deliveries_release(
            claims=claims, delay=delay, publish=delay <= settings.WEBHOOKS_COUNTDOWN_MAX
        )
