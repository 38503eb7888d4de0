"""Each masking action, wildcards, hostile rules, and encryption to a consumer's public key."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwe, jwk

from schemas_app import masking
from schemas_app.masking import REDACTED, MaskingError, parse_rules

PAYLOAD: dict[str, Any] = {
    "card": "4111111111111111",
    "email": "ada@example.com",
    "ssn": 123456789,
    "lines": [{"sku": "a", "secret": "s1"}, {"sku": "b", "secret": "s2"}],
    "nested": {"a~b": {"x/y": "deep"}},
}


def _apply(rules: Any, payload: Any = PAYLOAD, **kwargs: Any) -> Any:
    options = {"hash_key": b"k" * 32, "encrypt": None, **kwargs}
    return masking.apply(payload, parse_rules(rules), **options)


def test_redact_mask_hash_and_drop() -> None:
    out = _apply(
        [
            {"path": "/card", "action": "mask", "keep": 4},
            {"path": "/email", "action": "redact"},
            {"path": "/ssn", "action": "hash"},
            {"path": "/lines/*/secret", "action": "drop"},
            {"path": "/nested/a~0b/x~1y", "action": "mask", "keep": 0},
            {"path": "/absent/field", "action": "redact"},
        ]
    )
    assert out["card"] == "************1111"
    assert out["email"] == REDACTED
    assert out["ssn"].startswith("hmac-sha256:")
    assert out["ssn"] == masking.hash_value(123456789, b"k" * 32)  # stable: consumers can join
    assert out["ssn"] != masking.hash_value(123456789, b"other key")
    assert out["lines"] == [{"sku": "a"}, {"sku": "b"}]
    assert out["nested"] == {"a~b": {"x/y": "****"}}
    assert PAYLOAD["card"] == "4111111111111111"  # the input is untouched


def test_drop_removes_array_elements_and_mask_redacts_containers() -> None:
    assert _apply([{"path": "/lines/0", "action": "drop"}])["lines"] == [PAYLOAD["lines"][1]]
    assert _apply([{"path": "/lines", "action": "mask"}])["lines"] == REDACTED


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"path": "/a"}, "give a list"),
        ([{"path": "a", "action": "redact"}], "/0/path"),
        ([{"path": "/a", "action": "shred"}], "/0/action"),
        ([{"path": "/a", "action": "mask", "keep": -1}], "/0/keep"),
        ([{"path": "/a", "action": "mask", "keep": True}], "/0/keep"),
        ([{"path": "/a", "action": "redact", "extra": 1}], "unknown keys"),
        ([{"path": "/a", "action": "redact"}] * 101, "at most 100"),
    ],
)
def test_bad_rules_are_refused_with_where(rules: Any, message: str) -> None:
    with pytest.raises(MaskingError, match=message):
        parse_rules(rules)


def test_encrypt_without_a_key_refuses_the_payload() -> None:
    with pytest.raises(MaskingError, match="needs an encryption key"):
        _apply([{"path": "/card", "action": "encrypt"}])


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_encrypt_makes_a_jwe_only_the_private_key_opens(kind: str) -> None:
    private_key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    private = jwk.JWK.from_pyca(private_key)
    public = json.loads(private.export_public())
    masking.check_public_jwk(public)
    out = _apply([{"path": "/card", "action": "encrypt"}], encrypt=masking.encrypter(public))
    assert out["card"].count(".") == 4  # compact JWE
    token = jwe.JWE()
    token.deserialize(out["card"], key=private)
    assert json.loads(token.payload) == "4111111111111111"
    assert json.loads(token.objects["protected"])["enc"] == "A256GCM"


def test_only_public_strong_keys_are_accepted() -> None:
    weak = jwk.JWK.from_pyca(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 - the weak key is the point
    with pytest.raises(MaskingError, match="too short"):
        masking.check_public_jwk(json.loads(weak.export_public()))
    strong = jwk.JWK.from_pyca(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(MaskingError, match="private key"):
        masking.check_public_jwk(json.loads(strong.export_private()))
    with pytest.raises(MaskingError, match="RSA or EC"):
        masking.check_public_jwk({"kty": "oct", "k": "c2VjcmV0"})
