"""One claimed delivery on its way through a worker process: claim, envelope, request, record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from webhooks import transport

if TYPE_CHECKING:  # claims imports this module; the type is all this one needs of it
    from deliveries.services.claims import Claim


@dataclass(slots=True)
class Job:
    """One claimed delivery on its way out: what to send, and what came back."""

    claim: Claim
    url: str = ""
    address: str | None = None  # the checked IP to connect to (webhooks.ssrf.Target)
    body: bytes = b""
    stored_body: bytes | None = None  # what the attempt log keeps, if not `body` (sealed fields)
    headers: dict[str, str] = field(default_factory=dict)
    stored_headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 15.0
    started_at: float = 0.0  # time.time() when the request started
    result: transport.TransportResult | None = None
    deferred: float | None = None  # not sent: give the claim back for this many seconds
    begun: float = 0.0  # monotonic time when its request started (0: not yet)
    lost: bool = False  # its lease was taken back (a renewal found the row held by another)
    verdict: str | None = None  # what its record decided (deliveries.backoff.Verdict)
    # while tracing (deliveries.traces): the send span's parent context and links, the span
    trace: tuple[Any, Any] | None = None
    span: Any = None
