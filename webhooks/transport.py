"""What one HTTP request to a consumer came to: `TransportResult`, and the names of the ways it
can fail (`ERROR_CLASSES`). The sender's client is `webhooks.atransport` (aiohttp, on its
event loop); this module holds what the sender, the recorder and the tests share with it.

Failures are classified (`error_class`): `refused`, `reset`, `dns`, `tls`, `connect_timeout`,
`read_timeout` (no answer, or not all of it, in time), `protocol` (an answer HTTP cannot parse)
and `connection` (any other network failure).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ERROR_CLASSES = (
    "refused",
    "reset",
    "dns",
    "tls",
    "connect_timeout",
    "read_timeout",
    "protocol",
    "connection",
)


@dataclass(frozen=True)
class TransportResult:
    """What happened to one HTTP request; `status_code` is None when no response came back."""

    status_code: int | None
    duration_ms: float
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""
    error_class: str = ""  # one of ERROR_CLASSES (or the sender's own, e.g. ssrf_blocked)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
