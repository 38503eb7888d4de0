"""An endpoint's `rate_limit_per_second`, shared by every worker process on every machine.

One token bucket per endpoint in Redis, taken from by a Lua script (atomic, one round trip, the
server's clock): it holds up to one second's worth of requests and refills at the rate. So an
endpoint limited to N per second gets at most N at once after a quiet spell, then N a second.
Deliveries that find no token are given back to the database, each due at a slot promised to
it; none is failed or dropped for the limit. Only endpoints with a limit pay for the round trip.
The script also counts the hold-backs per endpoint, for `/metrics`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import redis
from django.conf import settings
from redis.commands.core import Script

logger = logging.getLogger(__name__)

# KEYS[1]: the bucket; KEYS[2]: the hold-back counters; ARGV[1]: the rate per second; ARGV[2]:
# how many requests are asked for; ARGV[3]: the endpoint (its field in the counters).
# Returns {granted, seconds until the first refused one may go} (a string: Redis would truncate
# a Lua number to an integer). The refused ones are promised slots 1/rate apart after every slot
# promised before (`horizon`), so deliveries given back by different workers at once do not all
# come back in the same second only to be refused again; a promise takes no token.
_TAKE = """
local rate = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'horizon')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
local horizon = tonumber(state[3]) or 0
if tokens == nil or at == nil then
  tokens = rate
else
  tokens = math.min(rate, tokens + math.max(0, now - at) * rate)
end
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
local wait = 0
if granted < want then
  local first = math.max(horizon, now + (1 - tokens) / rate)
  horizon = first + (want - granted) / rate
  wait = first - now
  redis.call('HINCRBY', KEYS[2], ARGV[3], want - granted)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now),
           'horizon', tostring(horizon))
redis.call('EXPIRE', KEYS[1], math.ceil(math.max(0, horizon - now)) + 60)
return {granted, tostring(wait)}
"""


@dataclass(frozen=True)
class Grant:
    granted: int  # requests that may be sent now
    wait: float  # seconds until the first refused one may go (0 when all were granted)


HELD_KEY = "webhooks:rate-held"  # endpoint -> deliveries held back so far (a Redis hash)
_client: tuple[int, Script] | None = None  # per process: a forked child makes its own


def _script() -> Script:
    global _client
    if _client is None or _client[0] != os.getpid():
        location = str(settings.CACHES["default"]["LOCATION"])
        client = redis.Redis.from_url(location, socket_connect_timeout=0.5, socket_timeout=0.5)
        _client = (os.getpid(), client.register_script(_TAKE))
    return _client[1]


def take(endpoint_id: str, rate: int, want: int) -> Grant:
    """Take up to `want` tokens from the endpoint's bucket.

    If Redis cannot be asked, nothing is granted: the deliveries wait in the database for a
    second rather than go out faster than the consumer asked for.
    """
    try:
        granted, wait = _script()(
            keys=[f"webhooks:rate:{endpoint_id}", HELD_KEY], args=[rate, want, endpoint_id]
        )
    except (redis.RedisError, OSError) as exc:
        logger.warning("rate limit of endpoint %s not checked (%s); holding back", endpoint_id, exc)
        return Grant(0, 1.0)
    return Grant(int(granted), float(wait))


def held_back() -> dict[str, int]:
    """How many times each endpoint's deliveries were held back by its limit, since Redis
    started (a counter for Prometheus; one delivery held back twice counts twice)."""
    counts = _script().registered_client.hgetall(HELD_KEY)
    return {
        endpoint.decode() if isinstance(endpoint, bytes) else endpoint: int(count)
        for endpoint, count in counts.items()
    }


def due_in(grant: Grant, rate: int, count: int) -> list[float]:
    """When each of `count` requests refused by `grant` may go, in seconds from now: the slots
    promised to them, 1/rate apart."""
    return [grant.wait + k / rate for k in range(count)]
