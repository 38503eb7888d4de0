"""Per-key request rate limit: a DRF throttle on the Redis cache, 429 with Retry-After.

A fixed window counted with Redis's atomic `INCR`, its expiry set in the same round trip (DRF's
SimpleRateThrottle keeps a list of timestamps per key and rewrites it on each request, which
loses counts under concurrency and costs more the higher the rate). If Redis is unreachable the
request is let through and logged: the limit protects the service, and refusing events because
the limiter is away would lose them.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from webhooks_project.env import parse_rate

from .models import ApiKey

logger = logging.getLogger(__name__)


class ApiKeyRateThrottle(BaseThrottle):
    """At most WEBHOOKS_THROTTLE_RATE requests per key (staff session: per user) per window."""

    def __init__(self) -> None:
        self._wait = 0.0

    def allow_request(self, request: Any, view: Any) -> bool:
        rate = parse_rate(settings.WEBHOOKS_THROTTLE_RATE)
        if rate is None:
            return True
        limit, window = rate
        auth = request.auth
        if isinstance(auth, ApiKey):
            ident = f"key:{auth.prefix}"
        elif request.user is not None and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        self._wait = window_allows(ident, limit, window)
        return not self._wait

    def wait(self) -> float | None:
        return self._wait


def window_allows(ident: str, limit: int, window: int) -> float:
    """Count one more request of `ident` in the current `window`-second window: 0.0 if it is
    within `limit`, else the seconds until the window ends. Redis away: allowed (logged)."""
    now = time.time()
    start = math.floor(now / window) * window
    try:
        count = _count(f"throttle:{ident}:{window}:{start}", window + 1)
    except Exception as exc:  # noqa: BLE001 - fail open when the limiter is away
        logger.warning("rate limiter unavailable, request let through: %s", exc)
        return 0.0
    return 0.0 if count <= limit else max(start + window - now, 0.001)


def _count(key: str, ttl: int) -> int:
    """One more request in the window `key` (which expires after `ttl` seconds); the count."""
    full = cache.make_and_validate_key(key)
    client = cache._cache.get_client(full, write=True)  # type: ignore[attr-defined]  # RedisCache's client: one round trip instead of add + incr
    with client.pipeline(transaction=False) as pipe:
        pipe.incr(full)
        pipe.expire(full, ttl)
        count, _ = pipe.execute()
    return int(count)
