"""Standard Webhooks v1 signing: the spec's test vector, the reference library, and the verifier."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from functools import partial

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

from webhooks import signing

# The published Standard Webhooks test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_reproduces_the_spec_vector() -> None:
    key = signing.secret_key(VECTOR_SECRET)
    assert signing.sign(key, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_reference_library_verifies_our_signature() -> None:
    # given a fresh secret and a body signed by us
    secret = signing.generate_secret()
    body = b'{"type":"order.created","data":{"id":1}}'
    ts = int(datetime.now(UTC).timestamp())
    header = signing.signature_header([signing.secret_key(secret)], "evt_1", ts, body)
    # when the consumer's reference library verifies it, then it returns the payload
    verified = Webhook(secret).verify(
        body, {"webhook-id": "evt_1", "webhook-timestamp": str(ts), "webhook-signature": header}
    )
    assert verified == {"type": "order.created", "data": {"id": 1}}


def test_several_secrets_give_space_separated_signatures_each_verifying() -> None:
    old, new = signing.generate_secret(), signing.generate_secret()
    ts = int(datetime.now(UTC).timestamp())
    header = signing.signature_header(
        [signing.secret_key(new), signing.secret_key(old)], "evt_2", ts, b"{}"
    )
    assert len(header.split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(
            b"{}",
            {"webhook-id": "evt_2", "webhook-timestamp": str(ts), "webhook-signature": header},
        )


def test_generated_secrets_are_whsec_with_32_random_bytes_and_unique() -> None:
    secrets = {signing.generate_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32


def test_verify_accepts_the_vector_and_rejects_tampering() -> None:
    key = signing.secret_key(VECTOR_SECRET)
    signing.verify(
        [key],
        msg_id=VECTOR_ID,
        timestamp=str(VECTOR_TS),
        signature=VECTOR_SIGNATURE,
        body=VECTOR_BODY,
        now=VECTOR_TS,
    )
    with pytest.raises(signing.SignatureError, match="no signature matches"):
        signing.verify(
            [key],
            msg_id=VECTOR_ID,
            timestamp=str(VECTOR_TS),
            signature=VECTOR_SIGNATURE,
            body=VECTOR_BODY + b" ",
            now=VECTOR_TS,
        )


@pytest.mark.parametrize(
    ("msg_id", "timestamp", "signature", "message"),
    [
        (None, str(VECTOR_TS), VECTOR_SIGNATURE, "missing"),
        (VECTOR_ID, "soon", VECTOR_SIGNATURE, "whole number"),
        (VECTOR_ID, str(VECTOR_TS - 301), VECTOR_SIGNATURE, "tolerance"),
        (VECTOR_ID, str(VECTOR_TS), "v2,abc", "no v1 signature"),
    ],
)
def test_verify_rejects_malformed_or_stale_headers(
    msg_id: str | None, timestamp: str, signature: str, message: str
) -> None:
    with pytest.raises(signing.SignatureError, match=message):
        signing.verify(
            [signing.secret_key(VECTOR_SECRET)],
            msg_id=msg_id,
            timestamp=timestamp,
            signature=signature,
            body=VECTOR_BODY,
            now=VECTOR_TS,
        )


# --- properties (Hypothesis): the verifier accepts exactly what was signed, and never fails
# with anything but SignatureError, whatever the headers hold ---

KEY = signing.secret_key(VECTOR_SECRET)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=512), data=st.data())
def test_any_single_bit_flip_of_the_body_is_refused(body: bytes, data: st.DataObject) -> None:
    signature = signing.sign(KEY, VECTOR_ID, VECTOR_TS, body)
    check = partial(
        signing.verify, [KEY], msg_id=VECTOR_ID, timestamp=str(VECTOR_TS), signature=signature
    )
    check(body=body, now=VECTOR_TS)
    if body:
        bit = data.draw(st.integers(0, len(body) * 8 - 1))
        flipped = bytearray(body)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(signing.SignatureError):
            check(body=bytes(flipped), now=VECTOR_TS)


@settings(max_examples=200, deadline=None)
@given(skew=st.integers(-100_000, 100_000))
def test_a_timestamp_is_accepted_exactly_within_the_tolerance(skew: int) -> None:
    signature = signing.sign(KEY, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    call = partial(
        signing.verify,
        [KEY],
        msg_id=VECTOR_ID,
        timestamp=str(VECTOR_TS),
        signature=signature,
        body=VECTOR_BODY,
        now=VECTOR_TS + skew,
    )
    if abs(skew) <= signing.DEFAULT_TOLERANCE_SECONDS:
        call()
    else:
        with pytest.raises(signing.SignatureError, match="tolerance"):
            call()


_header = st.one_of(st.none(), st.text(max_size=200), st.sampled_from(["", " ", "v1,", "v1,\x00"]))


@settings(max_examples=500, deadline=None)
@given(msg_id=_header, timestamp=_header, signature=_header, body=st.binary(max_size=64))
def test_malformed_headers_only_ever_raise_signature_error(
    msg_id: str | None, timestamp: str | None, signature: str | None, body: bytes
) -> None:
    with pytest.raises(signing.SignatureError):
        signing.verify(
            [KEY],
            msg_id=msg_id,
            timestamp=timestamp,
            signature=signature,
            body=body,
            now=VECTOR_TS,
        )


def test_ed25519_secrets_sign_v1a_beside_hmac_ones() -> None:
    hmac_secret, ed_secret = signing.generate_secret(), signing.generate_ed25519_secret()
    assert ed_secret.startswith("whsk_")
    assert signing.public_key(hmac_secret) is None
    public = signing.public_key(ed_secret)
    assert public is not None
    assert public.startswith("whpk_")
    keys = [signing.signing_key(ed_secret), signing.signing_key(hmac_secret)]
    header = signing.signature_header(keys, "evt_1", VECTOR_TS, b"{}")
    v1a, v1 = header.split(" ")
    assert v1 == signing.sign(signing.secret_key(hmac_secret), "evt_1", VECTOR_TS, b"{}")
    verifier = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))
    verifier.verify(base64.b64decode(v1a.removeprefix("v1a,")), f"evt_1.{VECTOR_TS}.{{}}".encode())


@pytest.mark.parametrize("bad", ["whsk_", "whsk_not-base64!", "whsk_" + "A" * 10])
def test_a_malformed_ed25519_secret_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="whsk_"):
        signing.signing_key(bad)
