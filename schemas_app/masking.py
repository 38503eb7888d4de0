"""Masking and encryption of sensitive payload fields, after transformation. Pure; no ORM.

Rules are a list of `{"path": "/customer/card", "action": "mask", "keep": 4}`. `path` is a JSON
pointer into the payload; a `*` token matches every member of an object or element of an array.
A path that is absent in a payload is skipped. Actions:

- `redact`: the value becomes "[redacted]";
- `mask`: a string (or number) keeps its last `keep` characters (default 4), the rest become `*`;
- `hash`: "hmac-sha256:" + hex HMAC-SHA256 of the value's canonical JSON under the server's key,
  so consumers can still join on it without seeing it;
- `drop`: the member is removed (an array element too);
- `encrypt`: the value's JSON becomes a compact JWE (A256GCM) for the endpoint's public key
  (RSA-OAEP-256 for RSA keys, ECDH-ES for EC keys): only that consumer can read it.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

ACTIONS = ("redact", "mask", "hash", "drop", "encrypt")
REDACTED = "[redacted]"
MAX_RULES = 100


class MaskingError(ValueError):
    """Rules that cannot be used, or a payload they cannot be applied to; says where."""


@dataclass(frozen=True)
class Rule:
    path: tuple[str, ...]
    action: str
    keep: int = 4


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def parse_rules(document: Any) -> list[Rule]:
    """Rules from their JSON form, or MaskingError naming the bad one (/0/action...)."""
    if document is None:
        return []
    if not isinstance(document, list) or len(document) > MAX_RULES:
        raise MaskingError(f"/: give a list of at most {MAX_RULES} rules")
    rules = []
    for index, raw in enumerate(document):
        if not isinstance(raw, dict):
            raise MaskingError(f"/{index}: a rule is an object with path and action")
        path, action, keep = raw.get("path"), raw.get("action"), raw.get("keep", 4)
        if not isinstance(path, str) or not path.startswith("/") or len(path) > 500:
            raise MaskingError(f"/{index}/path: a JSON pointer like /customer/email")
        if action not in ACTIONS:
            raise MaskingError(f"/{index}/action: one of {', '.join(ACTIONS)}")
        if not isinstance(keep, int) or isinstance(keep, bool) or not 0 <= keep <= 64:
            raise MaskingError(f"/{index}/keep: a whole number from 0 to 64")
        unknown = set(raw) - {"path", "action", "keep"}
        if unknown:
            raise MaskingError(f"/{index}: unknown keys {sorted(unknown)}")
        tokens = tuple(_unescape(t) for t in path.split("/")[1:])
        rules.append(Rule(path=tokens, action=action, keep=keep))
    return rules


def hash_value(value: Any, key: bytes) -> str:
    canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return "hmac-sha256:" + hmac.new(key, canonical, hashlib.sha256).hexdigest()


def _masked(value: Any, keep: int) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return REDACTED
    text = str(value)
    shown = text[-keep:] if keep else ""
    return "*" * (len(text) - len(shown)) + shown


def apply(
    payload: Any,
    rules: list[Rule],
    *,
    hash_key: bytes,
    encrypt: Callable[[Any], Any] | None,
) -> Any:
    """A copy of `payload` with every rule applied (the original is left untouched).

    Raises MaskingError if a rule says `encrypt` and there is no key to encrypt for: the payload
    is then not sent at all, rather than sent with the value in clear or silently dropped.
    """
    if not rules:
        return payload
    result = copy.deepcopy(payload)
    for rule in rules:
        if rule.action == "encrypt" and encrypt is None:
            raise MaskingError(
                f"/{'/'.join(rule.path)}: 'encrypt' needs an encryption key on the endpoint"
            )
        result = _apply_rule(result, rule.path, rule, hash_key, encrypt)
    return result


def _transform_value(value: Any, rule: Rule, hash_key: bytes, encrypt: Any) -> Any:
    if rule.action == "redact":
        return REDACTED
    if rule.action == "mask":
        return _masked(value, rule.keep)
    if rule.action == "hash":
        return hash_value(value, hash_key)
    return encrypt(value)


_DROP = object()


def _apply_rule(node: Any, path: tuple[str, ...], rule: Rule, hash_key: bytes, encrypt: Any) -> Any:
    """`node` with the rule applied at `path` below it (containers changed in place)."""
    if not path:
        return _DROP if rule.action == "drop" else _transform_value(node, rule, hash_key, encrypt)
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        keys = list(node) if head == "*" else ([head] if head in node else [])
        for key in keys:
            value = _apply_rule(node[key], rest, rule, hash_key, encrypt)
            if value is _DROP:
                del node[key]
            else:
                node[key] = value
    elif isinstance(node, list):
        if head == "*":
            indexes = list(range(len(node)))
        elif head.isdigit() and int(head) < len(node):
            indexes = [int(head)]
        else:
            indexes = []
        dropped = []
        for index in indexes:
            value = _apply_rule(node[index], rest, rule, hash_key, encrypt)
            if value is _DROP:
                dropped.append(index)
            else:
                node[index] = value
        for index in reversed(dropped):
            del node[index]
    return node


# --- encryption for one consumer ---------------------------------------------------------------


def check_public_jwk(document: Any) -> None:
    """Raise MaskingError unless `document` is a public RSA (2048+) or EC JWK."""
    from jwcrypto import jwk

    if not isinstance(document, dict):
        raise MaskingError("give the public key as a JWK object")
    if "d" in document:
        raise MaskingError("this is a private key: register only the public part")
    try:
        key = jwk.JWK(**document)
    except Exception as exc:  # noqa: BLE001 - jwcrypto raises several kinds
        raise MaskingError(f"not a usable JWK: {exc}") from exc
    if document.get("kty") == "RSA":
        size = key.get_op_key("encrypt").key_size
        if size < 2048:
            raise MaskingError(f"an RSA key of {size} bits is too short (2048 or more)")
    elif document.get("kty") != "EC":
        raise MaskingError("use an RSA or EC (P-256, P-384, P-521) public key")


def encrypter(document: dict[str, Any]) -> Callable[[Any], str]:
    """A function turning a value into a compact JWE for this public JWK."""
    from jwcrypto import jwe, jwk

    key = jwk.JWK(**document)
    alg = "RSA-OAEP-256" if document.get("kty") == "RSA" else "ECDH-ES"
    header = orjson.dumps({"alg": alg, "enc": "A256GCM", "cty": "application/json"}).decode()

    def encrypt(value: Any) -> str:
        token = jwe.JWE(orjson.dumps(value), protected=header)
        token.add_recipient(key)
        return str(token.serialize(compact=True))  # jwcrypto has no types

    return encrypt
