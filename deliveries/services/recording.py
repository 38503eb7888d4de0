"""Recording: finished attempts written in one transaction with the deliveries' next states,
dead letters, endpoint health and the metrics rollup."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone

from deliveries import metrics
from deliveries.backoff import Decision, Verdict, decide
from deliveries.job import Job
from deliveries.models import DeadLetter, Delivery, DeliveryAttempt
from deliveries.partition_keys import id_span
from webhooks.models import Endpoint
from webhooks_project.db import binding_cursor

from . import notices, ordering
from .claims import Claim, deliveries_release
from .endpoints import endpoint_disable_with_notice
from .enqueue import deliveries_enqueue

logger = logging.getLogger(__name__)
attempt_logger = logging.getLogger("deliveries.attempts")  # one record per attempt

_D = Delivery._meta.db_table


def _stored(job: Job) -> bytes:
    """The body as the attempt log keeps it (sealed fields stay sealed)."""
    return job.stored_body if job.stored_body is not None else job.body


# Refusals of our own (no request was made): not counted as HTTP attempts.
NOT_SENT = frozenset({"endpoint_disabled", "ssrf_blocked", "secret_unreadable", "payload_invalid"})


# Plain strings (`.value`): psycopg would dump an Enum member as its name.
_OUTCOMES = {
    Verdict.SUCCEEDED: DeliveryAttempt.Outcome.SUCCEEDED.value,
    Verdict.RETRY: DeliveryAttempt.Outcome.RETRYING.value,
    Verdict.FAILED: DeliveryAttempt.Outcome.FAILED.value,
    Verdict.DEAD: DeliveryAttempt.Outcome.FAILED.value,
}
_FINAL_STATUS = {
    Verdict.SUCCEEDED: Delivery.Status.SUCCEEDED.value,
    Verdict.FAILED: Delivery.Status.FAILED.value,
    Verdict.DEAD: Delivery.Status.DEAD.value,
}

_ADVANCE_SQL = f"""
UPDATE {_D} AS d
   SET status = v.status, next_attempt_at = v.next_at, dispatched_at = v.dispatched_at,
       completed_at = v.completed_at, last_status_code = v.code, lease_expires_at = NULL,
       request_body = COALESCE(d.request_body, v.body),
       request_body_digest = COALESCE(d.request_body_digest, v.digest)
  FROM unnest(%(id)s::bigint[], %(claimed)s::timestamptz[], %(status)s::varchar[],
              %(next_at)s::timestamptz[], %(dispatched_at)s::timestamptz[],
              %(completed_at)s::timestamptz[], %(code)s::int[], %(body)s::text[],
              %(digest)s::varchar[])
       AS v(id, claimed, status, next_at, dispatched_at, completed_at, code, body, digest)
 WHERE d.id = v.id AND d.status = 'in_flight' AND d.last_attempt_at = v.claimed
   AND d.id >= %(low)s AND d.id < %(high)s
RETURNING d.id
"""  # noqa: S608 - the table name is ours, every value is a parameter
_ADVANCE_COLUMNS = ("id", "claimed", "status", "next_at", "dispatched_at", "completed_at", "code")
_ATTEMPT_COLUMNS = (
    "delivery_id",
    "number",
    "outcome",
    "started_at",
    "duration_ms",
    "status_code",
    "error",
    "error_class",
    "request_headers",
    "response_headers",
    "response_body",
    "request_body",
    "request_body_bytes",
)
_JSON_COLUMNS = frozenset({"request_headers", "response_headers"})  # COPY takes them as text
# No foreign key guards attempts (their table is partitioned): the recorder itself holds the
# deliveries against deletion until commit, as the key check did, and finds any already gone.
_HOLD_SQL = f"SELECT id FROM {_D} WHERE id = ANY(%(ids)s) FOR KEY SHARE"  # noqa: S608
_COPY_ATTEMPTS_SQL = (
    f"COPY {DeliveryAttempt._meta.db_table} ({', '.join(_ATTEMPT_COLUMNS)}) FROM STDIN"
)


def attempts_record(jobs: Sequence[Job]) -> None:
    """Record finished jobs in one transaction: attempt rows, next states, dead letters.

    A delivery's state only changes if this attempt still holds the claim (still in flight,
    same claim); an attempt whose lease was taken back is recorded but changes nothing else.
    Short retries are published with a countdown after commit; long ones are parked in the row.
    Jobs marked `deferred` were never sent: their claims are given back.
    """
    close_old_connections()
    deferred: dict[float, list[Claim]] = {}
    for job in jobs:
        if job.deferred is not None:
            deferred.setdefault(job.deferred, []).append(job.claim)
    if deferred:
        for delay, claims in deferred.items():
            deliveries_release(claims=claims, delay=delay)
        jobs = [job for job in jobs if job.deferred is None]
        if not jobs:
            return
    try:
        _attempts_write(jobs)
    except IntegrityError:
        _attempts_write_again(jobs)


def _attempts_write_again(jobs: Sequence[Job]) -> None:
    """Record a batch whose write broke a constraint. Three causes, all handled here:

    - the batch was written before and the commit's answer was lost: a job whose send is in the
      audit log already (same delivery, same start) is skipped, as everything its transaction
      wrote committed with it;
    - a delivery was deleted while in flight (its endpoint or event deleted): its job is dropped
      and named in the log;
    - two sends of a delivery carry the same attempt number: a claim committed without waiting
      for the WAL flush was lost in a database crash, and the delivery was claimed again. Both
      requests reached the consumer, so both are recorded, the later one under the next number.
    """
    ids = sorted({job.claim.delivery_id for job in jobs})
    with transaction.atomic():
        # FOR UPDATE, not NO KEY UPDATE: besides keeping these rows from being deleted, it holds
        # off other recorders' attempt inserts for them (they take KEY SHARE first, _HOLD_SQL),
        # so the numbers chosen below are still free at commit.
        alive = set(
            Delivery.objects.select_for_update()
            .filter(pk__in=ids)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if len(alive) < len(ids):
            logger.warning(
                "deliveries deleted while in flight, attempts not recorded: %s",
                sorted(set(ids) - alive),
            )
        recorded: dict[int, dict[int, datetime]] = {}  # delivery -> attempt number -> start
        for delivery_id, number, started in DeliveryAttempt.objects.filter(
            delivery_id__in=alive
        ).values_list("delivery_id", "number", "started_at"):
            recorded.setdefault(delivery_id, {})[number] = started
        kept: list[Job] = []
        numbers: list[int] = []
        for job in jobs:
            if job.claim.delivery_id not in alive:
                continue
            sends = recorded.setdefault(job.claim.delivery_id, {})
            started = datetime.fromtimestamp(job.started_at, UTC)
            if started in sends.values():
                continue  # recorded by the write whose answer was lost
            number = job.claim.number if job.claim.number not in sends else max(sends) + 1
            if number != job.claim.number:
                logger.warning(
                    "delivery %s was claimed twice as attempt %d (a claim lost in a database "
                    "crash); this send is recorded as attempt %d",
                    job.claim.delivery_id,
                    job.claim.number,
                    number,
                )
            sends[number] = started
            kept.append(job)
            numbers.append(number)
        if kept:
            _attempts_write(kept, numbers=numbers)
        # a delivery counts every request it made, the one under a forgotten claim included
        for job, number in zip(kept, numbers, strict=True):
            if number != job.claim.number:
                Delivery.objects.filter(pk=job.claim.delivery_id, attempt_count__lt=number).update(
                    attempt_count=number
                )


def _decide(jobs: Sequence[Job]) -> list[tuple[Job, Decision]]:
    """What each answer means for its delivery: done, retried (when), failed or dead."""
    clock = time.time()
    decided = []
    for job in jobs:
        claim, result = job.claim, job.result
        assert result is not None
        # the endpoint's own, else its event type's, else the default
        schedule = next(
            s
            for s in (claim.schedule, claim.type_schedule, settings.WEBHOOKS_RETRY_SCHEDULE)
            if s is not None
        )
        decision = decide(
            status_code=result.status_code,
            error_class=result.error_class,
            error=result.error,
            retry_after=result.headers.get("retry-after"),
            attempts_made=claim.number - claim.retry_base,  # a replay restarts the schedule
            schedule=schedule,
            jitter=settings.WEBHOOKS_RETRY_JITTER,
            now=clock,
        )
        job.verdict = decision.verdict.value
        decided.append((job, decision))
    return decided


def _stored_text(job: Job) -> tuple[str, str]:
    """The body as the log keeps it (cut to WEBHOOKS_STORED_BODY_MAX_BYTES), and its digest."""
    text = _stored(job)[: settings.WEBHOOKS_STORED_BODY_MAX_BYTES].decode("utf-8", "ignore")
    return text, hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _attempt_row(job: Job, decision: Decision, number: int, body: str | None) -> tuple[Any, ...]:
    """The attempt's row for COPY, in `_ATTEMPT_COLUMNS` order (`body` None: the delivery's)."""
    result = job.result
    assert result is not None
    row = {
        "delivery_id": job.claim.delivery_id,
        "number": number,
        "outcome": _OUTCOMES[decision.verdict],
        "started_at": datetime.fromtimestamp(job.started_at, UTC),
        "duration_ms": round(result.duration_ms, 3),
        "status_code": result.status_code,
        "error": result.error[:500],
        "error_class": result.error_class,
        "request_headers": job.stored_headers,
        "response_headers": result.headers,
        "response_body": result.body,
        "request_body": body,
        "request_body_bytes": len(job.body) if job.body else None,
    }
    return tuple(
        orjson.dumps(row[c]).decode() if c in _JSON_COLUMNS else row[c] for c in _ATTEMPT_COLUMNS
    )


def _next_states(
    decided: Sequence[tuple[Job, Decision]], now: datetime
) -> tuple[dict[str, list[Any]], dict[int, list[int]]]:
    """Each delivery's next state, one array per column of `_ADVANCE_SQL`; and the retries
    that ride on a countdown message, by countdown."""
    states = []  # the next state of each delivery, by `_ADVANCE_SQL`'s column names
    retries: dict[int, list[int]] = {}
    for job, decision in decided:
        claim = job.claim
        state = {"id": claim.delivery_id, "claimed": claim.claimed_at}
        state["code"] = job.result.status_code if job.result else None
        if decision.verdict is Verdict.RETRY:
            delay = decision.delay or 0.0
            due = now + timedelta(seconds=delay)
            # A short delay rides on a Celery countdown: the row counts as dispatched for that
            # time. A long one is parked with no message, for the sweeper.
            countdown = delay <= settings.WEBHOOKS_COUNTDOWN_MAX
            if countdown:
                retries.setdefault(math.ceil(delay), []).append(claim.delivery_id)
            state["status"] = Delivery.Status.PENDING.value
            state["next_at"], state["dispatched_at"] = due, due if countdown else None
            state["completed_at"] = None
        else:
            state["status"] = _FINAL_STATUS[decision.verdict]
            state["next_at"] = state["dispatched_at"] = None
            state["completed_at"] = now
        states.append(state)
    return {column: [state[column] for state in states] for column in _ADVANCE_COLUMNS}, retries


def _attempts_write(jobs: Sequence[Job], *, numbers: Sequence[int] | None = None) -> None:
    """Write a batch's attempt rows (numbered as claimed, or by `numbers`), next states, dead
    letters, endpoint health and the metrics rollup in one transaction."""
    now = timezone.now()
    decided = _decide(jobs)
    advance, retries = _next_states(decided, now)
    # A body is stored once per delivery: the first attempt recorded puts it on the delivery
    # (if its claim still holds), a later one that sent the same body stores none of its own.
    bodies = [_stored_text(job) for job, _ in decided]
    advance["body"] = [
        text if job.claim.body_digest is None else None
        for (job, _), (text, _digest) in zip(decided, bodies, strict=True)
    ]
    advance["digest"] = [digest for _, digest in bodies]
    # planned against those days' partitions only
    advance_params: dict[str, Any] = {**advance, **id_span(advance["id"])}

    with transaction.atomic():
        with binding_cursor() as cursor:
            once = Counter(job.claim.delivery_id for job in jobs)
            ids = sorted(once)
            cursor.execute(_HOLD_SQL, {"ids": ids})
            if cursor.rowcount < len(ids):
                raise IntegrityError("deliveries deleted while in flight")  # -> write again
            cursor.execute(_ADVANCE_SQL, advance_params)
            advanced = {r[0] for r in cursor.fetchall()}
            with cursor.copy(_COPY_ATTEMPTS_SQL) as stream:
                for i, ((job, decision), (text, digest)) in enumerate(
                    zip(decided, bodies, strict=True)
                ):
                    # the body on the delivery is this one: it had it, or this write put it there
                    # (a delivery twice in a batch, claimed twice, keeps each body to be sure)
                    on_delivery = job.claim.body_digest == digest or (
                        job.claim.body_digest is None
                        and job.claim.delivery_id in advanced
                        and once[job.claim.delivery_id] == 1
                    )
                    number = numbers[i] if numbers is not None else job.claim.number
                    stream.write_row(
                        _attempt_row(job, decision, number, None if on_delivery else text)
                    )
        DeadLetter.objects.bulk_create(
            DeadLetter(
                delivery_id=job.claim.delivery_id,
                endpoint_id=job.claim.endpoint_id,
                event_type=job.claim.event_type,
                reason=decision.reason[:500],
                last_status_code=job.result.status_code if job.result else None,
                created_at=now,
            )
            for job, decision in decided
            if job.claim.delivery_id in advanced
            and decision.verdict in (Verdict.FAILED, Verdict.DEAD)
        )
        _endpoint_health_note(decided=decided, advanced=advanced)
        notices.notices_delivery_dead(
            [
                notices.DeadDelivery(
                    delivery_id=job.claim.delivery_id,
                    event_id=job.claim.event_id,
                    event_type=job.claim.event_type,
                    endpoint_id=job.claim.endpoint_id,
                    attempts=job.claim.number,
                    last_status_code=job.result.status_code if job.result else None,
                    reason=decision.reason,
                )
                for job, decision in decided
                if job.claim.delivery_id in advanced
                and decision.verdict in (Verdict.FAILED, Verdict.DEAD)
            ],
            at=now,
        )
        metrics.stats_add(_stats_of(decided, advanced), at=now)
        for endpoint_id, reason in {
            job.claim.endpoint_id: decision.reason
            for job, decision in decided
            if decision.disable_endpoint
        }.items():
            endpoint_disable_with_notice(endpoint_id=endpoint_id, reason=reason)
        # ordered deliveries that moved: their keys' next ones may go (services/ordering.py);
        # last, so that the keys stay locked for as short a time as can be
        ordering.keys_settle(
            {
                (job.claim.endpoint_id, job.claim.ordering_key)
                for job in jobs
                if job.claim.ordering_key is not None and job.claim.delivery_id in advanced
            },
            now=now,
        )
        for countdown, ids in retries.items():
            due_ids = [i for i in ids if i in advanced]
            if due_ids:
                transaction.on_commit(
                    partial(deliveries_enqueue, delivery_ids=due_ids, countdown=countdown),
                    robust=True,
                )
    if attempt_logger.isEnabledFor(logging.INFO):
        _attempts_log(decided, advanced)


def _attempts_log(decided: Sequence[tuple[Job, Decision]], advanced: set[int]) -> None:
    """One log record per recorded attempt, with structured fields (a JSON line each under
    WEBHOOKS_LOG_FORMAT=json): ids, outcome, status, duration, error class. Never the body,
    the headers or the error text (which may quote the response)."""
    for job, decision in decided:
        claim, result = job.claim, job.result
        assert result is not None
        fields = {
            "event_id": claim.event_id,
            "event_type": claim.event_type,
            "endpoint_id": claim.endpoint_id,
            "delivery_id": claim.delivery_id,
            "attempt": claim.number,
            "outcome": _OUTCOMES[decision.verdict],
            "status_code": result.status_code,
            "duration_ms": round(result.duration_ms, 1),
            "error_class": result.error_class or None,
            "next_attempt_in_s": (
                round(decision.delay or 0.0, 1) if decision.verdict is Verdict.RETRY else None
            ),
            "stale": claim.delivery_id not in advanced,  # its lease was taken back meanwhile
        }
        attempt_logger.info(
            "attempt %s %s of delivery %s (event %s, endpoint %s): %s in %.1f ms%s",
            claim.number,
            fields["outcome"],
            claim.delivery_id,
            claim.event_id,
            claim.endpoint_id,
            result.status_code or result.error_class,
            result.duration_ms,
            f", next in {fields['next_attempt_in_s']} s" if fields["next_attempt_in_s"] else "",
            extra={"fields": fields},
        )


def _stats_of(decided: Sequence[tuple[Job, Decision]], advanced: set[int]) -> metrics.Deltas:
    """The rollup counts of a recorded batch. Outcomes count only where this attempt moved
    its delivery (a lease taken back changes nothing); every request made counts as an attempt."""
    deltas = metrics.Deltas()
    for job, decision in decided:
        claim, result = job.claim, job.result
        assert result is not None
        sent = result.error_class not in NOT_SENT
        moved = claim.delivery_id in advanced
        if not (sent or moved):
            continue
        delta = deltas.of(claim.endpoint_id, claim.event_type)
        if sent:
            delta.attempt(result.duration_ms)
        if not moved:
            continue
        if decision.verdict is Verdict.SUCCEEDED:
            answered = job.started_at + result.duration_ms / 1000
            accepted = claim.accepted_at.timestamp() if claim.accepted_at else job.started_at
            delta.success((answered - accepted) * 1000)
        elif decision.verdict is Verdict.RETRY:
            delta.retried += 1
        else:
            delta.dead_lettered += 1
            if decision.verdict is Verdict.DEAD:
                delta.dead += 1
            else:
                delta.failed += 1
    return deltas


_CLEAR_FAILING_SQL = f"""
WITH ended AS (
    SELECT id, failing_since FROM {Endpoint._meta.db_table}
     WHERE id = ANY(%s::varchar[]) AND failing_since IS NOT NULL
       FOR NO KEY UPDATE
)
UPDATE {Endpoint._meta.db_table} AS e SET failing_since = NULL
  FROM ended WHERE e.id = ended.id
RETURNING e.id, ended.failing_since
"""  # noqa: S608 - the table name is ours, the value a parameter


def _endpoint_health_note(*, decided: Sequence[tuple[Job, Decision]], advanced: set[int]) -> None:
    """Track each endpoint's current run of failures: a success ends it, a failure starts it.

    Writes only when a run starts or ends (the filters match nothing otherwise).
    """
    succeeded: set[str] = set()
    failed_first: dict[str, datetime] = {}
    for job, decision in decided:
        if job.claim.delivery_id not in advanced:
            continue
        endpoint_id = job.claim.endpoint_id
        if decision.verdict is Verdict.SUCCEEDED:
            succeeded.add(endpoint_id)
        elif job.result and job.result.error_class != "endpoint_disabled":
            # our own refusal to send is not the endpoint failing
            at = datetime.fromtimestamp(job.started_at, UTC)
            failed_first[endpoint_id] = min(at, failed_first.get(endpoint_id, at))
    if succeeded:
        # on nearly every batch, to clear what is rarely set: one plain statement (the ORM's
        # update cost 5% of the worker's time at a steady load, issue 15)
        with binding_cursor() as cursor:
            cursor.execute(_CLEAR_FAILING_SQL, [sorted(succeeded)])
            recovered = dict(cursor.fetchall())
        if recovered:  # runs that ended: announced (failure notices)
            notices.notices_endpoint_recovered(recovered, at=timezone.now())
    started = {}
    for endpoint_id, at in failed_first.items():
        if endpoint_id not in succeeded and Endpoint.objects.filter(
            pk=endpoint_id, failing_since__isnull=True
        ).update(failing_since=at):
            started[endpoint_id] = at
    if started:  # runs that started: announced
        notices.notices_endpoint_failing(started)
