"""The retry policy: what a response means and when to try again. Pure; no ORM.

Outcome by response: 2xx succeeds. 408, 409, 425, 429, 5xx, 3xx (never followed), timeouts,
connection, TLS and protocol errors are retried. 410 Gone fails and disables the endpoint. Any other
4xx, and a refused target, fail without retry. `Retry-After` on 429/503 is honoured, capped by the
schedule's longest delay.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from webhooks.transport import ERROR_CLASSES

_RNG = random.Random()  # noqa: S311 - jitter, not cryptography; seeding one per call was costly
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})
# `secret_unreadable`: the endpoint's secret is under an encryption key no longer configured;
# retried on the schedule, so restoring the key lets the delivery through.
# Every network failure class the transport records is retried; "timeout" is how attempts
# recorded before those classes were told apart name a timeout.
RETRYABLE_ERRORS = frozenset({*ERROR_CLASSES, "timeout", "secret_unreadable"})


class Verdict(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"  # not retryable
    DEAD = "dead"  # retryable, but attempts are exhausted


@dataclass(frozen=True)
class Decision:
    """What to do after an attempt: the verdict, the delay before the next try, and why."""

    verdict: Verdict
    delay: float | None = None
    reason: str = ""
    disable_endpoint: bool = False


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def jittered(delay: float, jitter: float, rng: random.Random) -> float:
    """Spread `delay` by up to ±`jitter` (a fraction) so retries of many deliveries do not align."""
    if delay <= 0 or jitter <= 0:
        return max(0.0, delay)
    return max(0.0, delay * (1 + rng.uniform(-jitter, jitter)))


def _describe(status_code: int | None, error_class: str, error: str) -> str:
    if status_code is not None:
        return f"HTTP {status_code}"
    return f"{error_class}: {error}" if error else error_class


def decide(
    *,
    status_code: int | None,
    error_class: str = "",
    error: str = "",
    retry_after: str | None = None,
    attempts_made: int,
    schedule: Sequence[int],
    jitter: float,
    now: float,
    rng: random.Random | None = None,
) -> Decision:
    """Decide the fate of a delivery after its `attempts_made`-th attempt got this outcome.

    `schedule[i]` is the delay before retry i+1, so a delivery has 1 + len(schedule) attempts.
    """
    rng = rng or _RNG
    reason = _describe(status_code, error_class, error)
    if status_code is not None and 200 <= status_code < 300:
        return Decision(Verdict.SUCCEEDED, reason=reason)
    if status_code == 410:
        return Decision(
            Verdict.FAILED, reason="HTTP 410 Gone: endpoint disabled", disable_endpoint=True
        )
    if status_code is not None:
        retryable = status_code >= 500 or status_code in RETRYABLE_4XX or 300 <= status_code < 400
    else:
        retryable = error_class in RETRYABLE_ERRORS
    if not retryable:
        return Decision(Verdict.FAILED, reason=reason)
    if attempts_made > len(schedule):
        return Decision(Verdict.DEAD, reason=f"{reason} after {attempts_made} attempts")
    delay = jittered(float(schedule[attempts_made - 1]), jitter, rng)
    if status_code in RETRY_AFTER_STATUSES:
        asked = parse_retry_after(retry_after, now=now)
        if asked is not None:
            delay = min(max(delay, asked), float(max(schedule)))
    return Decision(Verdict.RETRY, delay=delay, reason=reason)
