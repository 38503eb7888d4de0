"""The envelope: one claim turned into the request that carries it. Pure: no ORM, no I/O.

Headers first (a refused claim records them too), then the payload shaped for the endpoint
(unsealed, transformed, checked, masked), serialized once, and signed over those exact bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from schemas_app import masking, payloads
from webhooks import signing

if TYPE_CHECKING:
    from .claims import Claim


@dataclass(frozen=True, slots=True)
class Envelope:
    body: bytes  # the exact bytes sent and signed
    stored_body: bytes | None  # what the attempt log keeps instead, when fields were sealed
    signature: str  # the `webhook-signature` header


def request_headers(
    claim: Claim, *, timestamp: int, user_agent: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The request's headers before signing, and the same as recorded: the endpoint's custom
    header values (often credentials) are redacted in the attempt log."""
    custom = {str(k): str(v) for k, v in claim.headers.items()}
    headers = {
        **custom,
        "content-type": "application/json",
        "user-agent": user_agent,
        "webhook-id": claim.event_id,
        "webhook-timestamp": str(timestamp),
    }
    if claim.sequence is not None:
        # ordered delivery: its place among its key's deliveries to this endpoint (a consumer
        # sees a gap), and the key, percent-encoded (a header value is ASCII)
        headers["webhook-ordering-key"] = quote(claim.ordering_key or "", safe="")
        headers["webhook-sequence"] = str(claim.sequence)
    stored = {k: (masking.REDACTED if k in custom else v) for k, v in headers.items()}
    return headers, stored


def envelope(
    claim: Claim,
    keys: list[signing.SigningKey],
    *,
    timestamp: int,
    hash_key: bytes,
    decrypt: Callable[[str], Any],
) -> Envelope:
    """The signed body for one claim. Raises `payloads.PayloadRefused` when the payload cannot
    be built or fails the output schema, and whatever `decrypt` raises for a sealed field it
    cannot open."""
    sealed: list[Any] = []  # the clear values of sealed fields, kept out of the attempt log
    clear = payloads.unseal(claim.data, claim.sensitive_fields, decrypt, sealed)
    payload = payloads.shape(
        event_type=claim.event_type,
        data=clear,
        type_mapping=claim.type_mapping,
        endpoint_mapping=claim.endpoint_mapping,
        output_schema=claim.output_schema,
        type_masking=claim.type_masking,
        endpoint_masking=claim.endpoint_masking,
        encryption_key=claim.encryption_key,
        hash_key=hash_key,
    )
    body = payloads.build_body(
        event_type=claim.event_type, occurred_at=claim.occurred_at, data=payload
    )
    stored_body = None
    if sealed:
        # what the event seals, the attempt log seals too (the consumer gets it in clear)
        stored = payloads.without_sealed(payload, sealed)
        if stored != payload:
            stored_body = payloads.build_body(
                event_type=claim.event_type, occurred_at=claim.occurred_at, data=stored
            )
    signature = signing.signature_header(keys, claim.event_id, timestamp, body)
    return Envelope(body=body, stored_body=stored_body, signature=signature)
