"""Standard Webhooks signatures over the exact bytes sent. Pure; no ORM.

signed content = f"{msg_id}.{timestamp}." + body
symmetric      = "v1,"  + base64(hmac_sha256(secret_bytes, signed content))   secret whsec_...
asymmetric     = "v1a," + base64(ed25519_sign(private_key, signed content))   secret whsk_...,
                                                           consumers verify with whpk_...
Several signatures (secret rotation) are space-separated in `webhook-signature`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
ED25519_SECRET_PREFIX = "whsk_"  # noqa: S105 - a prefix, not a secret
PUBLIC_KEY_PREFIX = "whpk_"
HMAC = "hmac-sha256"
ED25519 = "ed25519"
SCHEMES = (HMAC, ED25519)
SECRET_BYTES = 32
DEFAULT_TOLERANCE_SECONDS = 5 * 60


class SignatureError(ValueError):
    """A request's signature headers are missing, malformed, stale, or do not match."""


def generate_secret() -> str:
    """Return a new `whsec_` secret carrying 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def generate_ed25519_secret() -> str:
    """Return a new `whsk_` secret: the 32-byte Ed25519 private key (its seed)."""
    raw = Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )
    return ED25519_SECRET_PREFIX + base64.b64encode(raw).decode("ascii")


def new_secret(scheme: str) -> str:
    """A new secret for the signature scheme (HMAC or ED25519)."""
    return generate_ed25519_secret() if scheme == ED25519 else generate_secret()


def public_key(secret: str) -> str | None:
    """The `whpk_` public key of a `whsk_` secret (None for an HMAC secret)."""
    if not secret.startswith(ED25519_SECRET_PREFIX):
        return None
    raw = _ed25519_key(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def _ed25519_key(secret: str) -> Ed25519PrivateKey:
    try:
        raw = base64.b64decode(secret.removeprefix(ED25519_SECRET_PREFIX), validate=True)
        return Ed25519PrivateKey.from_private_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("secret is not a 32-byte base64 key after the whsk_ prefix") from exc


SigningKey = bytes | Ed25519PrivateKey


def signing_key(secret: str) -> SigningKey:
    """The key a stored secret signs with: HMAC bytes for whsec_, an Ed25519 key for whsk_."""
    if secret.startswith(ED25519_SECRET_PREFIX):
        return _ed25519_key(secret)
    return secret_key(secret)


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


def sign_ed25519(key: Ed25519PrivateKey, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return one `v1a,<base64>` Ed25519 signature of `body` for `msg_id` at `timestamp`."""
    signature = key.sign(f"{msg_id}.{timestamp}.".encode() + body)
    return "v1a," + base64.b64encode(signature).decode("ascii")


def signature_header(keys: Iterable[SigningKey], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the `webhook-signature` value: one signature per key, space-separated."""
    return " ".join(
        sign(key, msg_id, timestamp, body)
        if isinstance(key, bytes)
        else sign_ed25519(key, msg_id, timestamp, body)
        for key in keys
    )


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
