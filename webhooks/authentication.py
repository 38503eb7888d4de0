"""DRF authentication by API key: `Authorization: Bearer <prefix>.<secret>`."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta

from django.core.cache import cache
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from webhooks_project import generation

from . import crypto, signing
from .models import ApiKey, Source
from .replay import REPLAY_KEY

LAST_USED_PRECISION = timedelta(minutes=1)


class ApiKeyUser:
    """The principal of a request made with an API key (it is not a Django user)."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        self.pk = None
        self.username = f"api-key:{api_key.prefix}"

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Accept a valid, unrevoked, unexpired key; refuse a bad one with 401 (never fall through)."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiKeyUser, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None
        key = key.strip()
        if not key or "." not in key:
            raise exceptions.AuthenticationFailed("Malformed API key.")
        # cached per process until the configuration changes (webhooks_project.generation),
        # by the key's digest; unknown keys are not cached
        api_key = generation.cached(
            ("api_key", hashlib.sha256(key.encode()).digest()),
            lambda: _usable_key(key),
            cache_none=False,
        )
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        source = api_key.source
        if source is not None and source.require_signature and request.method not in SAFE:
            _verify_source_signature(request, source)
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_PRECISION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
            api_key.last_used_at = now  # the cached copy too: one write per key per period
        return ApiKeyUser(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def _usable_key(key: str) -> ApiKey | None:
    try:
        return ApiKey.objects.get_from_key(key)
    except ApiKey.DoesNotExist:
        return None


def _verify_source_signature(request: Request, source: Source) -> None:
    """Token *and* signature: the body must be signed with the source's secret, recently, and
    its `webhook-id` not seen inside the tolerance window (401 otherwise).

    The id is reserved in the cache for twice the tolerance; `ReplayWindowMiddleware` releases
    it when the request is not accepted (4xx/5xx), so the source may send that message again.
    """
    from webhooks_project.errors import ServiceUnavailable  # it imports DRF's views

    django_request = request._request
    meta = django_request.META
    try:
        secret = crypto.decrypt(source.secret)
    except crypto.SecretUnreadable as exc:
        raise ServiceUnavailable(
            "The source's secret cannot be read (encryption keys); nothing was stored."
        ) from exc
    try:
        signing.verify(
            [signing.secret_key(secret)],
            msg_id=meta.get("HTTP_WEBHOOK_ID"),
            timestamp=meta.get("HTTP_WEBHOOK_TIMESTAMP"),
            signature=meta.get("HTTP_WEBHOOK_SIGNATURE"),
            body=django_request.body,
            now=time.time(),
        )
    except signing.SignatureError as exc:
        raise exceptions.AuthenticationFailed(f"Signature check failed: {exc}.") from exc
    digest = hashlib.sha256(meta["HTTP_WEBHOOK_ID"].encode("utf-8", "replace")).hexdigest()
    key = f"replay:{source.pk}:{digest}"  # any header value becomes a well-formed cache key
    try:
        fresh = cache.add(key, 1, timeout=2 * signing.DEFAULT_TOLERANCE_SECONDS)
    except Exception as exc:  # noqa: BLE001 - refuse rather than accept a possible replay
        raise ServiceUnavailable(
            "Replay protection is unavailable; nothing was stored. Retry later."
        ) from exc
    if not fresh:
        raise exceptions.AuthenticationFailed(
            "This webhook-id was already accepted; send a new id for a new message."
        )
    meta[REPLAY_KEY] = key
