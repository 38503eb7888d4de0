"""Endpoint secrets at rest: Fernet tokens under WEBHOOKS_ENCRYPTION_KEYS (MultiFernet).

The first key encrypts; every key decrypts, so a new key can be put first, `manage.py
rotate_encryption_keys` re-encrypts every secret under it, and the old key is dropped after.
A database dump therefore holds no `whsec_` secret, only tokens that need a key from the
environment.
"""

from __future__ import annotations

import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnreadable(ValueError):
    """A stored secret that none of the configured keys decrypts."""


@functools.cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.WEBHOOKS_ENCRYPTION_KEYS))


def encrypt(secret: str) -> str:
    return fernet().encrypt(secret.encode()).decode("ascii")


@functools.lru_cache(maxsize=8192)
def _decrypt(token: str, keys: tuple[str, ...]) -> str:
    try:
        return _fernet(keys).decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError) as exc:
        raise SecretUnreadable("no configured encryption key decrypts this secret") from exc


def decrypt(token: str) -> str:
    """The plaintext of a stored token (cached: the delivery path decrypts on every claim)."""
    return _decrypt(token, tuple(settings.WEBHOOKS_ENCRYPTION_KEYS))


def rotate(token: str) -> str:
    """The token re-encrypted under the first key."""
    try:
        return fernet().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken as exc:
        raise SecretUnreadable("no configured encryption key decrypts this secret") from exc
