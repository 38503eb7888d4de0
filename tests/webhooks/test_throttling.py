"""Per-key rate limit on the Redis cache: 429 with Retry-After, per key, open if Redis is away."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from webhooks_project.env import parse_rate


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("100/s", (100, 1)), ("6000/min", (6000, 60)), ("10/2h", (10, 7200)), ("5/day", (5, 86400))],
)
def test_rates_parse(text: str, parsed: tuple[int, int]) -> None:
    assert parse_rate(text) == parsed


@pytest.mark.parametrize("text", ["", "off", "None"])
def test_a_rate_can_be_off(text: str) -> None:
    assert parse_rate(text) is None


@pytest.mark.parametrize("text", ["100", "x/s", "10/fortnight", "-1/s", "10/s/s"])
def test_a_bad_rate_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad rate"):
        parse_rate(text)


def test_a_key_over_its_rate_gets_429_with_retry_after_and_others_do_not(
    make_api_client: Any, settings: Any
) -> None:
    # windows are aligned to the clock: one whose boundary is centuries away, so the count
    # cannot restart between the requests (with "3/min" a minute could end mid-test)
    settings.WEBHOOKS_THROTTLE_RATE = "3/100000d"
    window = 100_000 * 86400
    busy, other = make_api_client(["read"]), make_api_client(["read"])
    assert [busy.get("/api/v1/endpoints/").status_code for _ in range(3)] == [200] * 3
    refused = busy.get("/api/v1/endpoints/")
    assert refused.status_code == 429
    assert refused.json()["error"] == "throttled"
    # until the window ends
    assert abs(int(refused.headers["Retry-After"]) - (window - time.time() % window)) <= 2
    assert other.get("/api/v1/endpoints/").status_code == 200


def test_with_redis_away_requests_are_let_through(
    api: APIClient, settings: Any, dead_port: int
) -> None:
    settings.WEBHOOKS_THROTTLE_RATE = "1/min"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{dead_port}/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    assert [api.get("/api/v1/endpoints/").status_code for _ in range(3)] == [200] * 3
