"""The retry policy as a pure function of the response and the attempt number."""

from __future__ import annotations

import random

import pytest

from deliveries.backoff import Verdict, decide, parse_retry_after

SCHEDULE = [5, 300, 1800]


def _decide(status: int | None, attempts: int = 1, **kw: object):  # type: ignore[no-untyped-def]
    return decide(
        status_code=status,
        attempts_made=attempts,
        schedule=SCHEDULE,
        jitter=0.0,
        now=1000.0,
        rng=random.Random(1),
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_succeeds(status: int) -> None:
    assert _decide(status).verdict is Verdict.SUCCEEDED


@pytest.mark.parametrize("status", [301, 302, 408, 409, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses_retry_on_schedule(status: int) -> None:
    decision = _decide(status, attempts=2)
    assert decision.verdict is Verdict.RETRY
    assert decision.delay == 300


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_fail_without_retry(status: int) -> None:
    assert _decide(status).verdict is Verdict.FAILED


def test_410_fails_and_disables_the_endpoint() -> None:
    decision = _decide(410)
    assert decision.verdict is Verdict.FAILED
    assert decision.disable_endpoint


@pytest.mark.parametrize(
    "error_class",
    ["refused", "reset", "dns", "tls", "connect_timeout", "read_timeout", "protocol", "connection"],
)
def test_network_errors_retry(error_class: str) -> None:
    assert _decide(None, error_class=error_class).verdict is Verdict.RETRY


def test_refused_target_is_not_retried() -> None:
    assert _decide(None, error_class="ssrf_blocked").verdict is Verdict.FAILED


def test_exhausted_attempts_are_dead() -> None:
    assert _decide(500, attempts=len(SCHEDULE)).verdict is Verdict.RETRY
    assert _decide(500, attempts=len(SCHEDULE) + 1).verdict is Verdict.DEAD


def test_retry_after_is_honoured_and_capped() -> None:
    assert _decide(429, retry_after="60").delay == 60
    assert _decide(503, retry_after="999999").delay == 1800  # capped by the longest delay
    assert _decide(500, retry_after="60").delay == 5  # only 429/503 carry Retry-After


def test_jitter_stays_within_bounds() -> None:
    rng = random.Random(7)
    delays = {
        decide(
            status_code=500, attempts_made=2, schedule=SCHEDULE, jitter=0.1, now=0, rng=rng
        ).delay
        for _ in range(200)
    }
    assert all(270 <= d <= 330 for d in delays)  # type: ignore[operator]
    assert len(delays) > 100


def test_parse_retry_after_http_date() -> None:
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert parse_retry_after("garbage", now=0) is None
