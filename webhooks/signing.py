"""Standard Webhooks v1 signatures (HMAC-SHA256) over the exact bytes sent. Pure; no ORM.

signed content = f"{msg_id}.{timestamp}." + body
header         = "v1," + base64(hmac_sha256(secret_bytes, signed content)), space-separated
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32
DEFAULT_TOLERANCE_SECONDS = 5 * 60


class SignatureError(ValueError):
    """A request's signature headers are missing, malformed, stale, or do not match."""


def generate_secret() -> str:
    """Return a new `whsec_` secret carrying 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """Decode a `whsec_...` secret (the prefix is optional) to the HMAC key bytes."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error as exc:
        raise ValueError("secret is not valid base64 after the whsec_ prefix") from exc


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return one `v1,<base64>` signature of `body` for `msg_id` at `timestamp` (unix seconds)."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def signature_header(keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the `webhook-signature` value: one signature per key, space-separated."""
    return " ".join(sign(key, msg_id, timestamp, body) for key in keys)


def verify(
    keys: Iterable[bytes],
    *,
    msg_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Raise SignatureError unless one `v1` signature in `signature` matches one of `keys`.

    `timestamp` must be within `tolerance` seconds of `now`, which defends against replays.
    """
    if not msg_id or not timestamp or not signature:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        ts = int(timestamp)
    except ValueError as exc:
        raise SignatureError("webhook-timestamp is not a whole number of seconds") from exc
    if abs(now - ts) > tolerance:
        raise SignatureError("webhook-timestamp is outside the allowed tolerance")
    offered = []
    for part in signature.split(" "):
        version, _, value = part.partition(",")
        if version == "v1" and value:
            offered.append(value)
    if not offered:
        raise SignatureError("webhook-signature carries no v1 signature")
    for key in keys:
        expected = sign(key, msg_id, ts, body).partition(",")[2]
        if any(
            hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))
            for candidate in offered
        ):
            return
    raise SignatureError("no signature matches")
