"""A circuit breaker per endpoint, in each worker process.

After `threshold` failed requests in a row an endpoint gets no requests for `cooldown` seconds;
then the next answer closes it or opens it again. The sender calls it under its own lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from webhooks import transport

logger = logging.getLogger("deliveries.sender")


def failed(result: transport.TransportResult) -> bool:
    """Whether an answer says the endpoint is down or overloaded (not: the request was bad)."""
    code = result.status_code
    return code is None or code >= 500 or code in (408, 429)


@dataclass
class _Health:
    failures: int = 0
    open_until: float = 0.0


class Breakers:
    """The breakers of every endpoint this process sends to (not thread-safe: lock outside)."""

    def __init__(self, *, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._health: dict[str, _Health] = {}

    def open_for(self, endpoint_id: str, now: float) -> float:
        """Seconds the endpoint's breaker stays open; 0 when it is closed."""
        health = self._health.get(endpoint_id)
        return max(0.0, health.open_until - now) if health is not None else 0.0

    def paused(self, now: float) -> list[str]:
        """Endpoints whose breaker is open."""
        return [e for e, health in self._health.items() if health.open_until > now]

    def note(self, endpoint_id: str, result: transport.TransportResult, now: float) -> bool:
        """Feed the endpoint's breaker an answer; True when this answer opened it."""
        if not failed(result):
            self._health.pop(endpoint_id, None)
            return False
        health = self._health.setdefault(endpoint_id, _Health())
        health.failures += 1
        if health.failures >= self.threshold and health.open_until <= now:
            health.open_until = now + self.cooldown
            health.failures = self.threshold - 1  # after the cooldown, one more trips it
            logger.warning(
                "endpoint %s: %d failed requests in a row, pausing it for %.0f s",
                endpoint_id,
                self.threshold,
                self.cooldown,
            )
            return True
        return False
